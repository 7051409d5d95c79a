//! One client connection speaking Canal's TCP protocol (docs/protocol.md#session, #requests).
//!
//! HANDSHAKE with an 8-byte seed on accept; the next frames are taken as ClientAuth whatever their
//! type until one authenticates (a failure is answered with `ACK{400}` and the socket stays open);
//! then SUBSCRIPTION / UNSUBSCRIPTION (answered), GET (MESSAGES or an error ACK), CLIENTACK /
//! CLIENTROLLBACK (answered only on error), anything else `ACK{400, "packet type: X is NOT
//! supported!"}`. Malformed frames close the connection; nothing a client sends can panic the
//! server or stall another session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use canal_core::protocol::auth::{AuthConfig, random_seed};
use canal_core::protocol::body::parse_client_id;
use canal_core::protocol::codec::{
    FrameDecoder, FrameError, PacketReader, encode_frame, write_raw_messages_frame,
};
use canal_core::protocol::packet::{ClientAuth, Packet};
use canal_core::protocol::packets::{
    self, ERROR_ACK_BATCH_ZERO, ERROR_GENERIC, ERROR_MISSING_IDENTITY,
};
use canal_core::protocol::{Body, GetTimeout};
use canal_core::store::{GetPolicy, GetWait};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::destination::{Destination, RequestError};

/// What the registry knows about a destination.
#[derive(Debug, Clone)]
pub enum Availability {
    /// Running on this server.
    Running(Arc<Destination>),
    /// Configured here but not running (standby, lazy, stopping).
    NotRunning,
    /// Active here, but its instance failed (the reason); it is being restarted.
    Failed(String),
    /// Not configured on this server.
    Unknown,
}

/// The server's destinations, as sessions need them.
pub trait Registry: Send + Sync + std::fmt::Debug + 'static {
    /// The destination's state now.
    fn lookup(&self, name: &str) -> Availability;
}

/// Per-session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `canal.user` / `canal.passwd`.
    pub auth: AuthConfig,
    /// Largest frame accepted from a client.
    pub max_frame_len: usize,
    /// How long a client may take to authenticate (Java has no bound; we close idle
    /// unauthenticated sockets so they cannot pile up).
    pub auth_timeout: Duration,
    /// Idle timeout when the client's ClientAuth names none (Java: 1 h).
    pub default_idle: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::open(),
            max_frame_len: 16 * 1024 * 1024,
            auth_timeout: Duration::from_secs(60),
            default_idle: Duration::from_secs(3600),
        }
    }
}

/// Why a session ended (logged; never an error for the server).
#[derive(Debug)]
enum End {
    ClientClosed,
    Idle,
    Protocol(String),
    Io(std::io::Error),
    DestinationStopped(String),
}

type Incoming = Result<Packet, String>;

/// Serves one connection until the client leaves, misbehaves, idles out, or a destination it uses
/// stops.
pub async fn serve<S>(stream: S, peer: String, registry: Arc<dyn Registry>, config: SessionConfig)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Incoming>(4);
    let decoder = FrameDecoder::with_max_frame_len(config.max_frame_len);
    let reader = tokio::spawn(read_loop(PacketReader::with_decoder(read_half, decoder), tx));
    let mut session = Connection {
        out: write_half,
        buf: BytesMut::with_capacity(4096),
        cuts: Vec::new(),
        rx,
        stash: None,
        registry,
        config,
        subscribed: HashMap::new(),
        presence: HashMap::new(),
    };
    let end = session.run().await;
    reader.abort();
    let _ = session.out.shutdown().await;
    match end {
        End::ClientClosed => debug!(%peer, "client closed the connection"),
        End::Idle => info!(%peer, "closing idle connection"),
        End::Protocol(why) => warn!(%peer, "closing connection: {why}"),
        End::Io(e) => debug!(%peer, "connection error: {e}"),
        End::DestinationStopped(d) => {
            info!(%peer, destination = %d, "destination stopped here; closing its client")
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut reader: PacketReader<R>, tx: mpsc::Sender<Incoming>) {
    loop {
        let item = match reader.read_packet().await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

struct Connection<W> {
    out: W,
    buf: BytesMut,
    /// Scratch of `write_raw_messages_frame`: where each entry goes in the frame.
    cuts: Vec<usize>,
    rx: mpsc::Receiver<Incoming>,
    /// A request that arrived while a GET was waiting.
    stash: Option<Packet>,
    registry: Arc<dyn Registry>,
    config: SessionConfig,
    /// Destinations this session subscribed to, so it can close when one stops.
    subscribed: HashMap<String, Arc<Destination>>,
    /// This session counted as a live consumer of each (an operator's cursor reset checks).
    presence: HashMap<String, crate::destination::Presence>,
}

impl<W: AsyncWrite + Unpin> Connection<W> {
    async fn run(&mut self) -> End {
        let seed = random_seed();
        if let Err(e) = self.send(&packets::handshake(&seed)).await {
            return e;
        }
        let idle =
            match tokio::time::timeout(self.config.auth_timeout, self.authenticate(&seed)).await {
                Ok(Ok(idle)) => idle,
                Ok(Err(end)) => return end,
                Err(_) => return End::Idle,
            };
        loop {
            let packet = match self.next_packet(idle).await {
                Ok(p) => p,
                Err(end) => return end,
            };
            if let Err(end) = self.dispatch(packet).await {
                return end;
            }
        }
    }

    /// Reads the next request, closing on idle timeout or when a subscribed destination stops.
    async fn next_packet(&mut self, idle: Duration) -> Result<Packet, End> {
        if let Some(p) = self.stash.take() {
            return Ok(p);
        }
        let stopped = first_closed(&self.subscribed);
        tokio::select! {
            r = tokio::time::timeout(idle, self.rx.recv()) => match r {
                Err(_) => Err(End::Idle),
                Ok(None) => Err(End::ClientClosed),
                Ok(Some(Err(e))) => Err(End::Protocol(e)),
                Ok(Some(Ok(p))) => Ok(p),
            },
            name = stopped => Err(End::DestinationStopped(name)),
        }
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), End> {
        self.buf.clear();
        encode_frame(packet, &mut self.buf).map_err(|e| End::Protocol(e.to_string()))?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.out.write_all(&self.buf).await.map_err(End::Io)?;
        self.out.flush().await.map_err(End::Io)
    }

    async fn error(&mut self, code: i32, message: impl Into<String>) -> Result<(), End> {
        self.send(&packets::ack_error(code, message)).await
    }

    /// Takes frames as ClientAuth until one passes; returns the idle timeout it asked for.
    async fn authenticate(&mut self, seed: &[u8]) -> Result<Duration, End> {
        loop {
            let packet = match self.rx.recv().await {
                None => return Err(End::ClientClosed),
                Some(Err(e)) => return Err(End::Protocol(e)),
                Some(Ok(p)) => p,
            };
            // Java does not check the type of this packet: whatever it is, its body is ClientAuth.
            let auth = ClientAuth::decode(packet.body.clone())
                .map_err(|e| End::Protocol(format!("undecodable ClientAuth: {e}")))?;
            if let Err(e) = self.config.auth.authenticate(seed, &auth.username, &auth.password) {
                debug!("authentication failed: {e}");
                self.send(&packets::auth_failed(&auth.username)).await?;
                continue;
            }
            if !auth.destination.is_empty() && !auth.client_id.is_empty() {
                // Subscribe during auth; if that fails Java closes the connection without an ACK.
                let client_id = parse_client_id(&auth.client_id)
                    .map_err(|e| End::Protocol(format!("ClientAuth: {e}")))?;
                let dest = match self.registry.lookup(&auth.destination) {
                    Availability::Running(d) => d,
                    Availability::Failed(reason) => {
                        return Err(End::Protocol(format!(
                            "ClientAuth subscribes to destination:{} which failed: {reason}",
                            auth.destination
                        )));
                    }
                    _ => {
                        return Err(End::Protocol(format!(
                            "ClientAuth subscribes to destination:{} which is not running here",
                            auth.destination
                        )));
                    }
                };
                dest.subscribe(client_id, &auth.filter)
                    .map_err(|e| End::Protocol(format!("ClientAuth subscribe: {e}")))?;
                self.presence.insert(auth.destination.clone(), dest.presence(client_id));
                self.subscribed.insert(auth.destination.clone(), dest);
            }
            self.send(&packets::ack_ok()).await?;
            let ms = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| v as u64);
            let idle = match (ms(auth.net_read_timeout), ms(auth.net_write_timeout)) {
                (None, None) => self.config.default_idle,
                (a, b) => Duration::from_millis(a.into_iter().chain(b).min().unwrap_or(0)),
            };
            return Ok(idle);
        }
    }

    /// Resolves a request's destination; `Ok(None)` means an error ACK was already written.
    async fn running(&mut self, name: &str) -> Result<Option<Arc<Destination>>, End> {
        match self.registry.lookup(name) {
            Availability::Running(d) => Ok(Some(d)),
            Availability::NotRunning => {
                self.error(ERROR_GENERIC, format!("destination:{name} should start first")).await?;
                Ok(None)
            }
            Availability::Failed(reason) => {
                // Canal's generic error, so that clients retry (the cluster connector reconnects)
                // instead of reading empty batches from an instance that reads nothing.
                self.error(ERROR_GENERIC, format!("destination:{name} failed: {reason}")).await?;
                Ok(None)
            }
            Availability::Unknown => {
                self.error(ERROR_GENERIC, format!("destination:{name} is not configured")).await?;
                Ok(None)
            }
        }
    }

    /// Parses the client id; `Ok(None)` means an error ACK was already written.
    async fn client_id(&mut self, text: &str) -> Result<Option<i16>, End> {
        match parse_client_id(text) {
            Ok(id) => Ok(Some(id)),
            Err(e) => {
                self.error(ERROR_GENERIC, e.to_string()).await?;
                Ok(None)
            }
        }
    }

    /// Java's MISSING_IDENTITY check of every request: `Ok(true)` when the destination or the
    /// client id is empty and the error ACK (with `message`) was written.
    async fn missing_identity(
        &mut self,
        destination: &str,
        client_id: &str,
        message: impl FnOnce() -> String,
    ) -> Result<bool, End> {
        if destination.is_empty() || client_id.is_empty() {
            self.error(ERROR_MISSING_IDENTITY, message()).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The client id parsed and the destination running here; `Ok(None)` means an error ACK was
    /// already written.
    async fn target(
        &mut self,
        destination: &str,
        client_id: &str,
    ) -> Result<Option<(i16, Arc<Destination>)>, End> {
        let Some(id) = self.client_id(client_id).await? else { return Ok(None) };
        Ok(self.running(destination).await?.map(|d| (id, d)))
    }

    /// The whole preamble of GET and CLIENTROLLBACK: [`Self::missing_identity`] with Java's
    /// message, then [`Self::target`].
    async fn checked_target(
        &mut self,
        destination: &str,
        client_id: &str,
    ) -> Result<Option<(i16, Arc<Destination>)>, End> {
        if self.missing_identity(destination, client_id, missing_identity_message).await? {
            return Ok(None);
        }
        self.target(destination, client_id).await
    }

    async fn request_error(&mut self, e: RequestError) -> Result<(), End> {
        if let RequestError::Store(_) = e {
            // The destination stopped under us: the client should fail over.
            self.error(ERROR_GENERIC, e.to_string()).await?;
            return Err(End::DestinationStopped(String::new()));
        }
        self.error(ERROR_GENERIC, e.to_string()).await
    }

    async fn dispatch(&mut self, packet: Packet) -> Result<(), End> {
        let body = match Body::decode(&packet) {
            Ok(b) => b,
            Err(canal_core::protocol::BodyError::UnknownType(t)) => {
                return self.send(&packets::unsupported_type(t)).await;
            }
            Err(e) => {
                return self.error(ERROR_GENERIC, format!("malformed request: {e}")).await;
            }
        };
        match body {
            Body::Sub(sub) => {
                let missing = || {
                    format!(
                        "destination or clientId is null. Sub: destination={:?} clientId={:?}",
                        sub.destination, sub.client_id
                    )
                };
                if self.missing_identity(&sub.destination, &sub.client_id, missing).await? {
                    return Ok(());
                }
                // A standby answers "should start first": every configured destination competes
                // for its running node from boot, so the client goes to the active server.
                let Some((client_id, dest)) = self.target(&sub.destination, &sub.client_id).await?
                else {
                    return Ok(());
                };
                match dest.subscribe(client_id, &sub.filter) {
                    Ok(()) => {
                        // The subscription (and the cursor it starts at) is durable before the
                        // client hears it succeeded.
                        if let Err(e) = dest.persisted().await {
                            return self.request_error(e).await;
                        }
                        self.presence.insert(sub.destination.clone(), dest.presence(client_id));
                        self.subscribed.insert(sub.destination.clone(), dest);
                        self.send(&packets::ack_ok()).await
                    }
                    Err(e) => self.request_error(e).await,
                }
            }
            Body::Unsub(unsub) => {
                if self
                    .missing_identity(
                        &unsub.destination,
                        &unsub.client_id,
                        missing_identity_message,
                    )
                    .await?
                {
                    return Ok(());
                }
                let Some(client_id) = self.client_id(&unsub.client_id).await? else {
                    return Ok(());
                };
                if let Availability::Running(d) = self.registry.lookup(&unsub.destination) {
                    d.unsubscribe(client_id);
                }
                self.subscribed.remove(&unsub.destination);
                self.presence.remove(&unsub.destination);
                self.send(&packets::ack_ok()).await
            }
            Body::Get(get) => {
                let Some((client_id, dest)) =
                    self.checked_target(&get.destination, &get.client_id).await?
                else {
                    return Ok(());
                };
                let wait = match GetTimeout::from_get(&get) {
                    GetTimeout::NonBlocking => GetWait::NonBlocking,
                    GetTimeout::Blocking => GetWait::Forever,
                    GetTimeout::Wait(d) => GetWait::Timeout(d),
                };
                // canal-rs's linger (docs/protocol.md#get-linger); <= 0 or unset: Canal's rule.
                let linger = get
                    .linger_micros
                    .filter(|m| *m > 0)
                    .map(|m| std::time::Duration::from_micros(m.unsigned_abs()));
                let fetch = usize::try_from(get.fetch_size).unwrap_or(0).max(1);
                let result = {
                    let get_fut = dest.get(client_id, fetch, GetPolicy { wait, linger });
                    tokio::pin!(get_fut);
                    // Watch the socket while waiting so that a vanished client's GET ends at
                    // once (it holds no lock meanwhile: see `Destination::get`).
                    loop {
                        tokio::select! {
                            r = &mut get_fut => break r,
                            incoming = self.rx.recv(), if self.stash.is_none() => match incoming {
                                None => return Err(End::ClientClosed),
                                Some(Err(e)) => return Err(End::Protocol(e)),
                                Some(Ok(p)) => self.stash = Some(p),
                            },
                        }
                    }
                };
                match result {
                    Ok(None) => self.send(&packets::empty_messages()).await,
                    // Our lease lapsed (e.g. the process was stopped past its session timeout):
                    // another server may be serving; answer like a destination not running here.
                    Ok(Some(_)) if !dest.may_serve() => {
                        self.request_error(RequestError::NotStarted(get.destination.clone())).await
                    }
                    // Written from the stored entries' bytes, not copied into a frame first.
                    Ok(Some(batch)) => write_raw_messages_frame(
                        &mut self.out,
                        batch.id,
                        &batch.batch.entries,
                        &mut self.buf,
                        &mut self.cuts,
                    )
                    .await
                    .map_err(|e| match e {
                        FrameError::Io(e) => End::Io(e),
                        e => End::Protocol(e.to_string()),
                    }),
                    Err(e) => self.request_error(e).await,
                }
            }
            Body::ClientAck(ack) => {
                if self
                    .missing_identity(&ack.destination, &ack.client_id, missing_identity_message)
                    .await?
                {
                    return Ok(());
                }
                // Java checks the batch id before it parses the client id.
                match ack.batch_id {
                    0 => {
                        return self
                            .error(ERROR_ACK_BATCH_ZERO, "batchId should assign value")
                            .await;
                    }
                    -1 => return Ok(()),
                    _ => {}
                }
                let Some((client_id, dest)) = self.target(&ack.destination, &ack.client_id).await?
                else {
                    return Ok(());
                };
                if !dest.may_serve() {
                    return self
                        .request_error(RequestError::NotStarted(ack.destination.clone()))
                        .await;
                }
                match dest.ack(client_id, ack.batch_id) {
                    // The cursor is durable before this connection's next frame is read, so an
                    // ack followed by any answered request is durable. CLIENTACK has no reply:
                    // a failure is Canal's error ACK, read by the client as the answer to its
                    // next request (docs/compatibility.md).
                    Ok(()) => match dest.persisted().await {
                        Ok(()) => Ok(()),
                        Err(e) => self.request_error(e).await,
                    },
                    Err(e) => self.request_error(e).await,
                }
            }
            Body::ClientRollback(rb) => {
                let Some((client_id, dest)) =
                    self.checked_target(&rb.destination, &rb.client_id).await?
                else {
                    return Ok(());
                };
                match dest.rollback(client_id, rb.batch_id) {
                    Ok(()) => Ok(()),
                    Err(e) => self.request_error(e).await,
                }
            }
            other => self.send(&packets::unsupported_type(other.packet_type() as i32)).await,
        }
    }
}

/// Java's message for a request without destination or client id.
fn missing_identity_message() -> String {
    "destination or clientId is null".to_owned()
}

/// Resolves with the name of the first subscribed destination that closes; never if none.
async fn first_closed(subscribed: &HashMap<String, Arc<Destination>>) -> String {
    if subscribed.is_empty() {
        return std::future::pending().await;
    }
    let waits = subscribed.iter().map(|(name, d)| {
        let d = d.clone();
        let name = name.clone();
        Box::pin(async move {
            d.wait_closed().await;
            name
        })
    });
    futures_select_all(waits).await
}

/// Minimal `select_all` over boxed futures without pulling in the `futures` crate.
async fn futures_select_all<F>(futs: impl Iterator<Item = std::pin::Pin<Box<F>>>) -> String
where
    F: std::future::Future<Output = String> + ?Sized,
{
    let mut futs: Vec<_> = futs.collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
