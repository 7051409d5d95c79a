//! [`SimpleConnector`]: one TCP session with one canal server, speaking Canal's protocol
//! (docs/protocol.md#session, #requests) the way Java's `SimpleCanalConnector` does, with one difference: a connection that
//! may be out of step with the server is closed rather than used.
//!
//! Canal answers CLIENTACK and CLIENTROLLBACK only when they fail, so a failure arrives later, in
//! front of the reply to some other request. The connector tracks whether such an unconfirmed
//! request is outstanding: an error ACK found waiting before a request is sent is reported as
//! [`ClientError::AckFailed`] and the connection stays usable; an error ACK read as the reply to
//! a request while an ack/rollback is unconfirmed is ambiguous (the real reply may still follow),
//! so it is reported as [`ClientError::AckFailed`] and the connection is closed. (When the
//! unconfirmed request is `connect`'s own rollback, which fails only where the destination does
//! not run, the error is reported as the server's [`ClientError::Server`].)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use canal_core::protocol::auth::client_password;
use canal_core::protocol::body::Body;
use canal_core::protocol::codec::{FrameDecoder, PacketReader, write_packet, write_packets};
use canal_core::protocol::packet::{
    Ack, ClientAck, ClientAuth, ClientRollback, Compression, Get, Packet, PacketType, Sub, Unsub,
};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::ClientError;
use crate::message::{EMPTY_BATCH_ID, Message};

/// Java's `TimeUnit`, as the GET request encodes it (`unit` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TimeUnit {
    /// 0.
    Nanoseconds,
    /// 1.
    Microseconds,
    /// 2 (the Java client's default).
    #[default]
    Milliseconds,
    /// 3.
    Seconds,
    /// 4.
    Minutes,
    /// 5.
    Hours,
    /// 6.
    Days,
}

impl TimeUnit {
    /// The wire number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// `amount` of this unit as a duration (saturating).
    pub fn duration(self, amount: u64) -> Duration {
        canal_core::protocol::body::unit_duration(amount, self.code())
    }
}

/// Settings of a connection (shared by [`SimpleConnector`] and
/// [`ClusterConnector`](crate::ClusterConnector)).
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectorConfig {
    /// The destination (Canal instance) to consume.
    pub destination: String,
    /// The client id (a Java `short`, 1..=32767; the Java client always uses 1001).
    pub client_id: i16,
    /// `canal.user` of the server ("" when the server has none).
    pub username: String,
    /// Plain password; scrambled with the server's seed before sending, empty sends empty.
    pub password: String,
    /// Idle time after which the server closes the connection (sent in ClientAuth as
    /// milliseconds; Java: 1 h).
    pub idle_timeout: Duration,
    /// How long to wait for a reply beyond the time a GET asks the server to wait (Java's
    /// `SO_TIMEOUT`, 60 s). A GET that blocks without limit has no read timeout.
    pub read_timeout: Duration,
    /// How long the TCP connect and handshake may take.
    pub connect_timeout: Duration,
    /// Roll back all un-acked batches after connecting (Java: true), so they are delivered
    /// again.
    pub rollback_on_connect: bool,
    /// Roll back all un-acked batches before disconnecting (Java: false).
    pub rollback_on_disconnect: bool,
    /// Largest frame accepted from the server.
    pub max_frame_len: usize,
    /// Decode every entry of a batch into [`Message::entries`] (the default). When false,
    /// `entries` stays empty and the batch is read in place from
    /// [`Message::raw_entries`] / [`Message::views`] (no owned string per column: the fast
    /// path for printing and forwarding).
    pub decode_entries: bool,
    /// Fetch ahead (default false): as soon as a GET with a bounded wait returns a batch, send
    /// the same GET again, and one more in the same write as the batch's ack (two ahead at
    /// most), so that the server makes and sends the next batches while the caller works on
    /// this one; the next [`SimpleConnector::get_without_ack`] calls read them. Canal lets a
    /// client hold several un-acked batches and ack them in order, so acks go on as before. A
    /// rollback first reads the batches fetched ahead and then rolls back every un-acked batch
    /// (rollback 0, which is what a rollback does to the data anyway); a subscribe or
    /// unsubscribe closes the connection ([`ClientError::Broken`]: the reconnect's rollback
    /// gives the un-acked batches back). Needs `rollback_on_connect` (ignored without it).
    pub prefetch: bool,
    /// Linger (default `None`, Canal's rule): sent with every GET (a canal-rs extension,
    /// docs/protocol.md#get-linger), it makes a waiting GET answer with the entries there once
    /// the server has put none for this long, instead of waiting for a full batch or the
    /// timeout: rows reach the client within the linger when the stream stops or trickles,
    /// while a steady stream still fills batches. Canal's servers ignore it.
    pub linger: Option<Duration>,
}

impl std::fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("destination", &self.destination)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "<set>" })
            .field("idle_timeout", &self.idle_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("rollback_on_connect", &self.rollback_on_connect)
            .field("rollback_on_disconnect", &self.rollback_on_disconnect)
            .field("max_frame_len", &self.max_frame_len)
            .field("decode_entries", &self.decode_entries)
            .field("prefetch", &self.prefetch)
            .field("linger", &self.linger)
            .finish()
    }
}

/// The Java client's fixed client id.
pub const DEFAULT_CLIENT_ID: i16 = 1001;

impl ConnectorConfig {
    /// Defaults for `destination`: client id 1001, no user or password, Java's timeouts.
    pub fn new(destination: impl Into<String>) -> Self {
        ConnectorConfig {
            destination: destination.into(),
            client_id: DEFAULT_CLIENT_ID,
            username: String::new(),
            password: String::new(),
            idle_timeout: Duration::from_secs(3600),
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            rollback_on_connect: true,
            rollback_on_disconnect: false,
            max_frame_len: 256 * 1024 * 1024,
            decode_entries: true,
            prefetch: false,
            linger: None,
        }
    }

    /// Builder-style: whether batches are decoded into [`Message::entries`] (see
    /// [`decode_entries`](Self::decode_entries)).
    pub fn decode_entries(mut self, decode: bool) -> Self {
        self.decode_entries = decode;
        self
    }

    /// Builder-style: whether the next batch is fetched ahead (see
    /// [`prefetch`](Self::prefetch)).
    pub fn prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Builder-style: the linger sent with every GET (see [`linger`](Self::linger)).
    pub fn linger(mut self, linger: Option<Duration>) -> Self {
        self.linger = linger;
        self
    }

    /// Builder-style: the client id.
    pub fn client_id(mut self, id: i16) -> Self {
        self.client_id = id;
        self
    }

    /// Builder-style: user name and plain password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = username.into();
        self.password = password.into();
        self
    }

    /// Builder-style: the idle timeout the server applies.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Builder-style: the reply read timeout.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.read_timeout = d;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ClientError::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |key, reason: &str| Err(ClientError::Config { key, reason: reason.into() });
        if self.destination.is_empty() || self.destination.contains('/') {
            return bad("destination", "must be non-empty and contain no '/'");
        }
        if self.client_id <= 0 {
            return bad("client_id", "must be in 1..=32767 (a Java short)");
        }
        if self.idle_timeout.as_millis() > i32::MAX as u128 || self.idle_timeout.is_zero() {
            return bad("idle_timeout", "must be between 1 ms and i32::MAX ms");
        }
        Ok(())
    }

    fn client_id_text(&self) -> String {
        self.client_id.to_string()
    }
}

/// Who sent the ack/rollback that no reply has confirmed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unconfirmed {
    /// The caller.
    Caller,
    /// `connect`'s own rollback.
    Connect,
}

/// One live socket and what we know about its state.
#[derive(Debug)]
struct Conn {
    reader: PacketReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    local: SocketAddr,
    peer: SocketAddr,
    /// A request was started and not finished (its future was dropped): the stream position is
    /// unknown.
    in_flight: bool,
    /// An ack or rollback was sent and no reply has confirmed it since (the server answers them
    /// only on failure).
    unconfirmed: Option<Unconfirmed>,
    /// GETs sent ahead (`ConnectorConfig::prefetch`) whose replies are still to be read, oldest
    /// first: those replies come before anything else the server sends.
    ahead: VecDeque<Ahead>,
    /// The last GET with a bounded wait and its read timeout: what is sent ahead.
    last_get: Option<(Packet, Option<Duration>)>,
}

/// A GET sent ahead.
#[derive(Clone, Copy, Debug)]
struct Ahead {
    /// The read timeout for its reply.
    timeout: Option<Duration>,
    /// An ack or rollback was sent after it: the server answers the GET first, so its reply
    /// says nothing of the ack (whose error, if any, comes after it).
    behind: bool,
}

/// How many GETs are kept ahead: one sent when a batch comes, one more with the ack of a batch
/// (in the same write), so the server can make and send two batches while the caller works.
const AHEAD: usize = 2;

/// A connection to one canal server (Java's `SimpleCanalConnector`).
///
/// Methods take `&mut self`: one request at a time, as the protocol requires. Every method that
/// talks to the server documents its cancel safety; in short, dropping a future after its request
/// was sent leaves the connection marked broken, and the next call fails with
/// [`ClientError::Broken`] (call [`connect`](Self::connect) again) instead of reading a stale
/// reply.
#[derive(Debug)]
pub struct SimpleConnector {
    address: String,
    config: ConnectorConfig,
    conn: Option<Conn>,
    filter: Option<String>,
}

impl SimpleConnector {
    /// A connector for the server at `address` (`host:port`); nothing is connected yet.
    ///
    /// # Errors
    /// [`ClientError::Config`] for bad settings.
    pub fn new(address: impl Into<String>, config: ConnectorConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let address = address.into();
        if address.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
            return Err(ClientError::Config {
                key: "address",
                reason: format!("'{address}' is not host:port"),
            });
        }
        Ok(SimpleConnector { address, config, conn: None, filter: None })
    }

    /// The server address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The settings.
    pub fn config(&self) -> &ConnectorConfig {
        &self.config
    }

    /// The filter remembered from the last [`subscribe`](Self::subscribe), re-sent on connect.
    pub fn filter(&self) -> Option<&str> {
        self.filter.as_deref()
    }

    /// Remembers `filter` without sending it (used by the cluster connector before connecting).
    pub(crate) fn remember_filter(&mut self, filter: Option<String>) {
        self.filter = filter;
    }

    /// Whether a usable connection is open (not broken by a cancelled request).
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.in_flight)
    }

    /// The local address of the connection (`ip:port`, as the client running node records it).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|c| c.local)
    }

    /// The server's address as connected.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|c| c.peer)
    }

    /// Connects (closing any earlier connection): TCP, HANDSHAKE, ClientAuth with the scrambled
    /// password; then, like the Java client, re-subscribes with the remembered filter and rolls
    /// back un-acked batches (if `rollback_on_connect`).
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::Timeout`], [`ClientError::Handshake`],
    /// [`ClientError::Auth`], and the errors of [`subscribe`](Self::subscribe) and
    /// [`rollback`](Self::rollback). The connection is closed on any error.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: a half-made connection is dropped with the future (the next call
    /// sees no connection, or a broken one).
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.conn = None;
        let result = self.open().await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let timeout = self.config.connect_timeout;
        let address = self.address.clone();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&address))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Connect { address: address.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|source| ClientError::Connect { address: address.clone(), source })?;
        let peer = stream.peer_addr().map_err(|source| ClientError::Connect { address, source })?;
        let (r, w) = stream.into_split();
        let decoder = FrameDecoder::with_max_frame_len(self.config.max_frame_len);
        self.conn = Some(Conn {
            reader: PacketReader::with_decoder(r, decoder),
            writer: w,
            local,
            peer,
            in_flight: false,
            unconfirmed: None,
            ahead: VecDeque::new(),
            last_get: None,
        });

        // HANDSHAKE.
        let hs = self.read_reply("HANDSHAKE", Some(timeout)).await?;
        if hs.r#type != PacketType::Handshake as i32 || hs.version != Some(1) {
            return Err(ClientError::Handshake(format!(
                "expected a version-1 HANDSHAKE, got type {} version {:?}",
                type_name(hs.r#type),
                hs.version
            )));
        }
        let Body::Handshake(hs) = hs.decode_body()? else {
            return Err(ClientError::Handshake("undecodable handshake body".into()));
        };

        // ClientAuth: timeouts in milliseconds, as the Java client sends them.
        let idle_ms = self.config.idle_timeout.as_millis().min(i32::MAX as u128) as i32;
        let auth = Body::ClientAuth(ClientAuth {
            username: self.config.username.clone(),
            password: client_password(&hs.seeds, &self.config.password).into_bytes(),
            net_read_timeout: Some(idle_ms),
            net_write_timeout: Some(idle_ms),
            ..ClientAuth::default()
        });
        let reply = self.round_trip("CLIENTAUTHENTICATION", &auth, Some(timeout)).await?;
        match reply_ack(&reply, "CLIENTAUTHENTICATION")? {
            None => {}
            Some((code, message)) => return Err(ClientError::Auth { code, message }),
        }
        tracing::debug!(server = %self.address, local = %local, "connected to canal server");

        if let Some(filter) = self.filter.clone() {
            self.subscribe(&filter).await?;
        }
        if self.config.rollback_on_connect {
            self.rollback(0).await?;
            if let Some(c) = self.conn.as_mut() {
                c.unconfirmed = Some(Unconfirmed::Connect);
            }
        }
        Ok(())
    }

    /// Subscribes the client to the destination with `filter` (empty keeps the server's
    /// configured filter; a non-empty one replaces the destination's table filter), and
    /// remembers it for reconnects.
    ///
    /// # Errors
    /// [`ClientError::Server`] for an error ACK (401 empty identity, 400 destination not running
    /// here), [`ClientError::AckFailed`] when an earlier ack failed, connection errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future after the request was sent marks the connection
    /// broken.
    pub async fn subscribe(&mut self, filter: &str) -> Result<(), ClientError> {
        let body = Body::Sub(Sub {
            destination: self.config.destination.clone(),
            client_id: self.config.client_id_text(),
            filter: filter.to_owned(),
        });
        self.refuse_ahead("SUBSCRIPTION")?;
        let reply = self.request("SUBSCRIPTION", &body, Some(self.config.read_timeout)).await?;
        self.expect_ok(&reply, "SUBSCRIPTION")?;
        self.filter = Some(filter.to_owned());
        Ok(())
    }

    /// Unsubscribes the client (the server deletes its subscription and cursor).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`subscribe`](Self::subscribe).
    pub async fn unsubscribe(&mut self) -> Result<(), ClientError> {
        let body = Body::Unsub(Unsub {
            destination: self.config.destination.clone(),
            client_id: self.config.client_id_text(),
            filter: String::new(),
        });
        self.refuse_ahead("UNSUBSCRIPTION")?;
        let reply = self.request("UNSUBSCRIPTION", &body, Some(self.config.read_timeout)).await?;
        self.expect_ok(&reply, "UNSUBSCRIPTION")?;
        self.filter = None;
        Ok(())
    }

    /// Fetches a batch and acks it at once (Java's `get`): at-most-once if the caller fails
    /// after this returns.
    ///
    /// `timeout`: `None` returns at once (possibly an empty batch); `Some(d)` waits up to `d`
    /// for the batch to fill; `Some(Duration::ZERO)` makes the server block until the batch is
    /// full (Java's timeout 0).
    ///
    /// # Errors
    /// As [`get_without_ack`](Self::get_without_ack) and [`ack`](Self::ack).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped future may have taken a batch that is then un-acked (it is
    /// delivered again after a rollback or reconnect) and leaves the connection broken.
    pub async fn get(
        &mut self,
        batch_size: i32,
        timeout: Option<Duration>,
    ) -> Result<Message, ClientError> {
        let amount = timeout.map(duration_ms);
        let message = self.get_without_ack(batch_size, amount, TimeUnit::Milliseconds).await?;
        if message.id != EMPTY_BATCH_ID {
            self.ack(message.id).await?;
        }
        Ok(message)
    }

    /// Fetches a batch without acking it (Java's `getWithoutAck`); ack or roll it back later.
    /// Several batches may be outstanding; ack them in order.
    ///
    /// `batch_size` ≤ 0 means 1000 (in the server's default MEMSIZE mode, units of 1 KiB).
    /// `timeout`: `None` or negative → non-blocking (sends -1); 0 → the server blocks until the
    /// batch is full; > 0 → wait up to `timeout` `unit`s, then return what there is.
    ///
    /// # Errors
    /// [`ClientError::Server`] for an error ACK (e.g. 400 not subscribed / destination not
    /// running), [`ClientError::AckFailed`] when an earlier ack or rollback failed,
    /// [`ClientError::Compression`] (the connection is closed, so a reconnect gives the batch
    /// back), [`ClientError::BadEntry`] (the connection stays usable: ack or roll back the batch),
    /// [`ClientError::Timeout`] and connection errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future after the request was sent marks the connection
    /// broken (the batch, if the server made one, stays un-acked and is delivered again after
    /// the next connect's rollback).
    pub async fn get_without_ack(
        &mut self,
        batch_size: i32,
        timeout: Option<i64>,
        unit: TimeUnit,
    ) -> Result<Message, ClientError> {
        let fetch_size = if batch_size <= 0 { 1000 } else { batch_size };
        let timeout = timeout.filter(|t| *t >= 0).unwrap_or(-1);
        let body = Body::Get(Get {
            destination: self.config.destination.clone(),
            client_id: self.config.client_id_text(),
            fetch_size,
            timeout: Some(timeout),
            unit: Some(unit.code()),
            auto_ack: Some(false),
            // Whole microseconds, at least 1 (0 would mean "no linger"); saturating.
            linger_micros: self
                .config
                .linger
                .map(|l| l.as_micros().clamp(1, i64::MAX as u128) as i64),
        });
        // The server may hold the reply for the wait it was asked for; a blocking GET has no
        // client-side limit (wrap the call in a timeout if one is wanted).
        let read_timeout = match timeout {
            0 => None,
            -1 => Some(self.config.read_timeout),
            t => Some(unit.duration(t.unsigned_abs()).saturating_add(self.config.read_timeout)),
        };
        let ahead = self.conn.as_mut().and_then(|c| c.ahead.pop_front());
        let (reply, confirms) = match ahead {
            // Sent ahead: its reply is the next frame.
            Some(a) => (self.read_reply("GET", a.timeout).await?, !a.behind),
            None => (self.request("GET", &body, read_timeout).await?, true),
        };
        let m = self.get_reply(reply, confirms)?;
        // Fetch ahead (bounded waits only: a blocking GET's reply could keep a rollback waiting
        // without limit).
        if self.config.prefetch
            && self.config.rollback_on_connect
            && read_timeout.is_some()
            && m.id != EMPTY_BATCH_ID
            && let Some(conn) = self.conn.as_mut()
        {
            let packet = body.to_packet();
            conn.last_get = Some((packet.clone(), read_timeout));
            if !conn.ahead.is_empty() {
                // Already ahead (the next one goes with this batch's ack).
                return Ok(m);
            }
            conn.in_flight = true;
            match write_packet(&mut conn.writer, &packet).await {
                Ok(()) => {
                    conn.in_flight = false;
                    conn.ahead.push_back(Ahead { timeout: read_timeout, behind: false });
                }
                // This batch is here; the broken connection fails the next call.
                Err(e) => {
                    tracing::debug!(error = %e, "sending the GET ahead failed");
                    self.break_conn();
                }
            }
        }
        Ok(m)
    }

    /// A GET's reply as the batch it carries. `confirms`: the GET was sent after the last ack or
    /// rollback, so a batch in reply confirms them.
    fn get_reply(&mut self, reply: Packet, confirms: bool) -> Result<Message, ClientError> {
        if reply.r#type == PacketType::Ack as i32 {
            return Err(match self.expect_ok(&reply, "GET") {
                Err(e) => e,
                Ok(()) => {
                    self.break_conn();
                    ClientError::UnexpectedPacket { request: "GET", got: "ACK".into() }
                }
            });
        }
        if reply.r#type != PacketType::Messages as i32 {
            self.break_conn();
            return Err(ClientError::UnexpectedPacket {
                request: "GET",
                got: type_name(reply.r#type),
            });
        }
        let compression = reply.compression.unwrap_or(0);
        // A batch we cannot read (the server has made it): close the connection, so that the
        // next connect's rollback gives it back instead of leaving it outstanding unnamed.
        if compression != Compression::Unspecified as i32 && compression != Compression::None as i32
        {
            self.break_conn();
            return Err(ClientError::Compression(compression));
        }
        // A reply came: every ack/rollback sent before this GET succeeded (their errors would
        // come first).
        if confirms && let Some(c) = self.conn.as_mut() {
            c.unconfirmed = None;
        }
        let m = match reply.decode_body() {
            Ok(Body::Messages(m)) => m,
            Ok(_) => {
                self.break_conn();
                return Err(ClientError::UnexpectedPacket {
                    request: "GET",
                    got: "MESSAGES".into(),
                });
            }
            Err(e) => {
                self.break_conn();
                return Err(e.into());
            }
        };
        if self.config.decode_entries {
            Message::decode(m.batch_id, m.messages)
        } else {
            Ok(Message::undecoded(m.batch_id, m.messages))
        }
    }

    /// Reads the reply of a GET sent ahead, if one is pending: true when it carried a batch
    /// (which is then un-acked and held by nobody).
    async fn settle_ahead(&mut self) -> Result<bool, ClientError> {
        let mut any = false;
        while let Some(a) = self.conn.as_mut().and_then(|c| c.ahead.pop_front()) {
            let reply = self.read_reply("GET", a.timeout).await?;
            any |= match self.get_reply(reply, !a.behind) {
                Ok(m) => m.id != EMPTY_BATCH_ID,
                // Its entries do not decode, but the server made the batch.
                Err(ClientError::BadEntry { .. }) => true,
                Err(e) => return Err(e),
            };
        }
        Ok(any)
    }

    /// Before a request other than GET or ack: a GET sent ahead would answer first, so the
    /// connection is closed (the reconnect's rollback gives the un-acked batches back).
    fn refuse_ahead(&mut self, request: &'static str) -> Result<(), ClientError> {
        if self.conn.as_ref().is_some_and(|c| !c.ahead.is_empty()) {
            tracing::debug!(request, "closing the connection: a batch was fetched ahead");
            self.break_conn();
            return Err(ClientError::Broken { reason: "a batch was fetched ahead" });
        }
        Ok(())
    }

    /// Acks a batch (the server moves the client's cursor). Nothing is answered on success; a
    /// failure (unknown batch, not the oldest outstanding one) shows up as
    /// [`ClientError::AckFailed`] on a later call. Batch id -1 (empty batch) is sent as Java does
    /// and ignored by the server.
    ///
    /// # Errors
    /// [`ClientError::AckFailed`] when an *earlier* ack or rollback failed (this one was not
    /// sent), connection errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future mid-write marks the connection broken.
    pub async fn ack(&mut self, batch_id: i64) -> Result<(), ClientError> {
        let body = Body::ClientAck(ClientAck {
            destination: self.config.destination.clone(),
            client_id: self.config.client_id_text(),
            batch_id,
        });
        // With prefetch, a second GET ahead goes in the same write (one wake-up of the server
        // for both), once one is already ahead.
        let also = self
            .conn
            .as_ref()
            .and_then(|c| (c.ahead.len() == AHEAD - 1).then(|| c.last_get.clone()).flatten());
        self.send_unanswered("CLIENTACK", &body, also).await
    }

    /// Rolls back one batch (`batch_id` > 0) or every un-acked batch (`batch_id` 0): they are
    /// delivered again. Nothing is answered on success, as [`ack`](Self::ack).
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`ack`](Self::ack).
    pub async fn rollback(&mut self, batch_id: i64) -> Result<(), ClientError> {
        // A batch fetched ahead is un-acked too: everything goes back (see
        // `ConnectorConfig::prefetch`).
        let batch_id = if self.settle_ahead().await? { 0 } else { batch_id };
        let body = Body::ClientRollback(ClientRollback {
            destination: self.config.destination.clone(),
            client_id: self.config.client_id_text(),
            batch_id,
        });
        self.send_unanswered("CLIENTROLLBACK", &body, None).await
    }

    /// Rolls back every un-acked batch (`rollback(0)`).
    ///
    /// # Errors
    /// As [`rollback`](Self::rollback).
    ///
    /// # Cancel safety
    /// As [`rollback`](Self::rollback).
    pub async fn rollback_all(&mut self) -> Result<(), ClientError> {
        self.rollback(0).await
    }

    /// Closes the connection (after a rollback of everything when `rollback_on_disconnect`).
    /// The remembered filter is kept for the next [`connect`](Self::connect).
    ///
    /// # Errors
    /// None is returned for the close itself; a failed rollback is logged.
    ///
    /// # Cancel safety
    /// Cancel safe: the connection is closed either way.
    pub async fn disconnect(&mut self) {
        // With a GET ahead, the rollback would first wait for its reply: the connection is
        // closed at once instead, and the next connect's rollback (which prefetch requires) gives
        // the un-acked batches back.
        let ahead = self.conn.as_ref().is_some_and(|c| !c.ahead.is_empty());
        if self.config.rollback_on_disconnect
            && !ahead
            && self.is_connected()
            && let Err(e) = self.rollback(0).await
        {
            tracing::debug!(error = %e, "rollback on disconnect failed");
        }
        if let Some(mut c) = self.conn.take() {
            use tokio::io::AsyncWriteExt;
            let _ = tokio::time::timeout(Duration::from_secs(1), c.writer.shutdown()).await;
        }
    }

    /// An ack or rollback of the caller was sent and nothing has confirmed it yet (with
    /// prefetch, a batch asked for before it does not).
    pub(crate) fn caller_unconfirmed(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.unconfirmed == Some(Unconfirmed::Caller))
    }

    // ---- internals ----

    fn break_conn(&mut self) {
        self.conn = None;
    }

    /// The connection, checked for a request that was cancelled mid-way.
    fn usable(&mut self) -> Result<&mut Conn, ClientError> {
        match &self.conn {
            None => Err(ClientError::NotConnected),
            Some(c) if c.in_flight => {
                self.conn = None;
                Err(ClientError::Broken {
                    reason: "an earlier request was cancelled with its reply in flight",
                })
            }
            Some(_) => Ok(self.conn.as_mut().expect("checked above")),
        }
    }

    /// Before sending: consumes frames that already arrived unasked (the error ACK of a failed
    /// ack/rollback) without waiting.
    fn take_unsolicited(&mut self) -> Result<(), ClientError> {
        let conn = self.usable()?;
        // The next frame is the reply of the GET sent ahead; an earlier ack's error comes after
        // it and is read with it (see `expect_ok`).
        if !conn.ahead.is_empty() {
            return Ok(());
        }
        let mut cx = Context::from_waker(Waker::noop());
        let polled = {
            let fut = pin!(conn.reader.read_packet());
            fut.poll(&mut cx)
        };
        let got = match polled {
            Poll::Pending => return Ok(()),
            Poll::Ready(r) => r,
        };
        let packet = match got {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.break_conn();
                return Err(ClientError::Closed);
            }
            Err(e) => {
                self.break_conn();
                return Err(e.into());
            }
        };
        match reply_ack(&packet, "(none)") {
            Ok(Some((code, message))) => {
                let ours = conn.unconfirmed == Some(Unconfirmed::Connect);
                conn.unconfirmed = None;
                if ours {
                    // The on-connect rollback failed: the destination does not run here.
                    return Err(ClientError::Server { code, message });
                }
                tracing::warn!(code, %message, "an earlier ack or rollback failed on the server");
                Err(ClientError::AckFailed { code, message })
            }
            Ok(None) | Err(_) => {
                let got = type_name(packet.r#type);
                self.break_conn();
                Err(ClientError::UnexpectedPacket { request: "(none)", got })
            }
        }
    }

    /// Sends a request that is answered and reads the reply.
    async fn request(
        &mut self,
        name: &'static str,
        body: &Body,
        timeout: Option<Duration>,
    ) -> Result<Packet, ClientError> {
        self.take_unsolicited()?;
        self.round_trip(name, body, timeout).await
    }

    async fn round_trip(
        &mut self,
        name: &'static str,
        body: &Body,
        timeout: Option<Duration>,
    ) -> Result<Packet, ClientError> {
        let conn = self.usable()?;
        conn.in_flight = true;
        if let Err(e) = write_packet(&mut conn.writer, &body.to_packet()).await {
            self.break_conn();
            return Err(e.into());
        }
        self.read_reply(name, timeout).await
    }

    async fn read_reply(
        &mut self,
        _name: &'static str,
        timeout: Option<Duration>,
    ) -> Result<Packet, ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::NotConnected);
        };
        conn.in_flight = true;
        let read = conn.reader.read_packet();
        let result = match timeout {
            None => read.await,
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(r) => r,
                Err(_) => {
                    self.break_conn();
                    return Err(ClientError::Timeout(t));
                }
            },
        };
        match result {
            Ok(Some(p)) => {
                conn.in_flight = false;
                Ok(p)
            }
            Ok(None) => {
                self.break_conn();
                Err(ClientError::Closed)
            }
            Err(e) => {
                self.break_conn();
                Err(e.into())
            }
        }
    }

    /// Sends a request the server answers only on failure.
    /// `then_get`: a GET to send ahead in the same write, after it.
    async fn send_unanswered(
        &mut self,
        name: &'static str,
        body: &Body,
        then_get: Option<(Packet, Option<Duration>)>,
    ) -> Result<(), ClientError> {
        let _ = name;
        self.take_unsolicited()?;
        let conn = self.usable()?;
        conn.in_flight = true;
        let written = match &then_get {
            None => write_packet(&mut conn.writer, &body.to_packet()).await,
            Some((get, _)) => {
                write_packets(&mut conn.writer, &[body.to_packet(), get.clone()]).await
            }
        };
        if let Err(e) = written {
            self.break_conn();
            return Err(e.into());
        }
        conn.in_flight = false;
        conn.unconfirmed = Some(Unconfirmed::Caller);
        // The GETs already ahead are answered before this request is read.
        for a in &mut conn.ahead {
            a.behind = true;
        }
        if let Some((_, timeout)) = then_get {
            conn.ahead.push_back(Ahead { timeout, behind: false });
        }
        Ok(())
    }

    /// Interprets an ACK reply: success clears the unconfirmed flag; an error is this request's
    /// own error, unless an ack/rollback was unconfirmed (then it is taken as that one's late
    /// failure and the connection, whose real reply may still come, is closed).
    fn expect_ok(&mut self, reply: &Packet, request: &'static str) -> Result<(), ClientError> {
        let outcome = reply_ack(reply, request);
        let unconfirmed = self.conn.as_ref().and_then(|c| c.unconfirmed);
        match outcome {
            Ok(None) => {
                if let Some(c) = self.conn.as_mut() {
                    c.unconfirmed = None;
                }
                Ok(())
            }
            Ok(Some((code, message))) if unconfirmed.is_some() => {
                tracing::warn!(code, %message, request, "error ACK while an ack/rollback was unconfirmed; closing the connection");
                self.break_conn();
                // Ours (the on-connect rollback fails where the destination does not run, and
                // then so would this request): report the server's error. The caller's: report
                // the failed ack.
                Err(if unconfirmed == Some(Unconfirmed::Connect) {
                    ClientError::Server { code, message }
                } else {
                    ClientError::AckFailed { code, message }
                })
            }
            Ok(Some((code, message))) => Err(ClientError::Server { code, message }),
            Err(e) => {
                self.break_conn();
                Err(e)
            }
        }
    }
}

/// Reads an ACK: `Ok(None)` for success, `Ok(Some((code, message)))` for an error ACK
/// (`error_code > 0`, as the Java client decides).
fn reply_ack(p: &Packet, request: &'static str) -> Result<Option<(i32, String)>, ClientError> {
    if p.r#type != PacketType::Ack as i32 {
        return Err(ClientError::UnexpectedPacket { request, got: type_name(p.r#type) });
    }
    let Body::Ack(Ack { error_code, error_message }) = p.decode_body()? else {
        return Err(ClientError::UnexpectedPacket { request, got: "ACK".into() });
    };
    match error_code {
        Some(code) if code > 0 => Ok(Some((code, error_message))),
        _ => Ok(None),
    }
}

fn type_name(t: i32) -> String {
    PacketType::try_from(t).map(|t| t.as_str_name().to_owned()).unwrap_or_else(|_| t.to_string())
}

/// A duration as whole milliseconds for GET, at least 1 for a non-zero duration.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    if d.is_zero() { 0 } else { i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(SimpleConnector::new("127.0.0.1:11111", ConnectorConfig::new("example")).is_ok());
        assert!(SimpleConnector::new("nohost", ConnectorConfig::new("example")).is_err());
        assert!(SimpleConnector::new("h:1", ConnectorConfig::new("")).is_err());
        assert!(SimpleConnector::new("h:1", ConnectorConfig::new("e").client_id(-3)).is_err());
        assert!(SimpleConnector::new("h:1", ConnectorConfig::new("e").client_id(0)).is_err());
        let dbg = format!("{:?}", ConnectorConfig::new("e").credentials("u", "secret"));
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn get_durations() {
        assert_eq!(duration_ms(Duration::ZERO), 0);
        assert_eq!(duration_ms(Duration::from_micros(10)), 1);
        assert_eq!(duration_ms(Duration::from_secs(2)), 2000);
        assert_eq!(TimeUnit::Seconds.duration(3), Duration::from_secs(3));
    }
}
