//! A small in-test Canal server: Java Canal's session semantics (docs/protocol.md#session, #requests) over
//! a queue of entries, with a log of what clients sent and knobs for misbehaviour.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use canal_client::entry::{Column, Entry, EntryType, EventType, Header, RowChange, RowData};
use canal_core::protocol::auth::{AuthConfig, random_seed};
use canal_core::protocol::body::{Body, GetTimeout};
use canal_core::protocol::codec::{
    PacketReader, encode_raw_messages_frame, write_frame, write_packet,
};
use canal_core::protocol::packet::Packet;
use canal_core::protocol::packets;
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a client sent, in order (one line per packet).
pub type Log = Vec<String>;

#[derive(Debug)]
pub struct State {
    pub auth: AuthConfig,
    /// Whether the destination runs here (a standby answers 400).
    pub running: bool,
    pub queue: VecDeque<Bytes>,
    pub outstanding: BTreeMap<i64, Vec<Bytes>>,
    pub next_batch: i64,
    pub subscribed: HashMap<String, String>,
    pub log: Log,
    /// ClientAuth packets as received.
    pub auths: Vec<canal_core::protocol::packet::ClientAuth>,
    /// Send non-empty batches in raw mode (no version), as Java does by default.
    pub raw: bool,
    /// Delay before writing the error ACK of a failed CLIENTACK.
    pub ack_error_delay: Duration,
    /// Send MESSAGES with this compression.
    pub compression: Option<i32>,
    /// Replies the server has finished writing (on any connection).
    pub replies: usize,
}

#[derive(Debug)]
pub struct FakeServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    listener: JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(auth: AuthConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            auth,
            running: true,
            queue: VecDeque::new(),
            outstanding: BTreeMap::new(),
            next_batch: 1,
            subscribed: HashMap::new(),
            log: Vec::new(),
            auths: Vec::new(),
            raw: true,
            ack_error_delay: Duration::ZERO,
            compression: None,
            replies: 0,
        }));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (st, ts) = (state.clone(), tasks.clone());
        let listener = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let task = tokio::spawn(session(sock, st.clone()));
                ts.lock().unwrap().push(task);
            }
        });
        FakeServer { addr, state, tasks, listener }
    }

    pub async fn open() -> Self {
        Self::start(AuthConfig::open()).await
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn push(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut s = self.state.lock().unwrap();
        s.queue.extend(entries.into_iter().map(|e| Bytes::from(e.encode_to_vec())));
    }

    pub fn log(&self) -> Log {
        self.state.lock().unwrap().log.clone()
    }

    /// Replies written so far (see [`Self::wait_replies`]).
    pub fn replies(&self) -> usize {
        self.state.lock().unwrap().replies
    }

    /// Waits (10 s at most) until the server has finished writing `n` replies in all: a reply the
    /// client has not asked for (an error ACK after CLIENTACK) is then readable on its socket.
    pub async fn wait_replies(&self, n: usize) {
        self.wait_for(&format!("{n} replies"), |s| s.replies >= n).await;
    }

    /// Waits (10 s at most) until `done` holds of the server's state.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&State) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            {
                let s = self.state.lock().unwrap();
                if done(&s) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "waiting for {what}: {:?}", s.log);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }

    /// Stops listening and drops every connection (the server process dies).
    pub fn kill(&self) {
        self.listener.abort();
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn session(sock: TcpStream, state: Arc<Mutex<State>>) {
    let (r, mut w) = sock.into_split();
    let mut reader = PacketReader::new(r);
    let seed = random_seed();
    if write_packet(&mut w, &packets::handshake(&seed)).await.is_err() {
        return;
    }
    // Reading runs apart, so a blocking GET notices a client that went away (as a Netty server
    // sees the channel close) instead of taking a batch for nobody.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let read_task = tokio::spawn(async move {
        while let Ok(Some(p)) = reader.read_packet().await {
            if tx.send(p).is_err() {
                return;
            }
        }
    });
    let mut authed = false;
    while let Some(p) = rx.recv().await {
        let reply = if !authed {
            let Ok(Body::ClientAuth(a)) = p.decode_body() else { break };
            let mut s = state.lock().unwrap();
            s.log.push(format!("AUTH {}", a.username));
            s.auths.push(a.clone());
            match s.auth.authenticate(&seed, &a.username, &a.password) {
                Ok(()) => {
                    authed = true;
                    Some(packets::ack_ok().into())
                }
                Err(_) => Some(packets::auth_failed(&a.username).into()),
            }
        } else {
            handle(&p, &state, &rx).await
        };
        let Some(reply) = reply else { continue };
        let ok = match reply {
            Reply::Packet(p) => write_packet(&mut w, &p).await.is_ok(),
            Reply::Frame(f) => write_frame(&mut w, &f).await.is_ok(),
        };
        state.lock().unwrap().replies += 1;
        if !ok {
            break;
        }
    }
    read_task.abort();
}

enum Reply {
    Packet(Packet),
    Frame(BytesMut),
}

impl From<Packet> for Reply {
    fn from(p: Packet) -> Self {
        Reply::Packet(p)
    }
}

async fn handle(
    p: &Packet,
    state: &Arc<Mutex<State>>,
    rx: &tokio::sync::mpsc::UnboundedReceiver<Packet>,
) -> Option<Reply> {
    let body = match p.decode_body() {
        Ok(b) => b,
        Err(_) => return Some(packets::unsupported_type(p.r#type).into()),
    };
    let not_started = || packets::ack_error(400, "destination:example should start first");
    match body {
        Body::Sub(sub) => {
            let mut s = state.lock().unwrap();
            s.log.push(format!("SUB {} {} {:?}", sub.destination, sub.client_id, sub.filter));
            if !s.running {
                return Some(not_started().into());
            }
            s.subscribed.insert(sub.client_id, sub.filter);
            Some(packets::ack_ok().into())
        }
        Body::Unsub(u) => {
            let mut s = state.lock().unwrap();
            s.log.push(format!("UNSUB {}", u.client_id));
            s.subscribed.remove(&u.client_id);
            Some(packets::ack_ok().into())
        }
        Body::Get(get) => {
            // canal-rs's linger (ignored here) only when sent.
            let linger = get.linger_micros.map(|l| format!(" linger {l}")).unwrap_or_default();
            state.lock().unwrap().log.push(format!(
                "GET {} {:?} {:?} {:?}{linger}",
                get.fetch_size, get.timeout, get.unit, get.auto_ack
            ));
            let deadline = match GetTimeout::from_get(&get) {
                GetTimeout::NonBlocking => Some(tokio::time::Instant::now()),
                GetTimeout::Blocking => None,
                GetTimeout::Wait(d) => Some(tokio::time::Instant::now() + d),
            };
            loop {
                {
                    let mut s = state.lock().unwrap();
                    if !s.running {
                        return Some(not_started().into());
                    }
                    if !s.subscribed.contains_key(&get.client_id) {
                        return Some(packets::ack_error(400, "client not subscribed").into());
                    }
                    if !s.queue.is_empty() {
                        let n = (get.fetch_size.max(1) as usize).min(s.queue.len());
                        let batch: Vec<Bytes> = s.queue.drain(..n).collect();
                        let id = s.next_batch;
                        s.next_batch += 1;
                        s.outstanding.insert(id, batch.clone());
                        if let Some(c) = s.compression {
                            let mut p = packets::messages(id, batch);
                            p.compression = Some(c);
                            return Some(p.into());
                        }
                        if s.raw {
                            let mut f = BytesMut::new();
                            encode_raw_messages_frame(id, &batch, &mut f).unwrap();
                            return Some(Reply::Frame(f));
                        }
                        return Some(packets::messages(id, batch).into());
                    }
                }
                if rx.is_closed() {
                    return None;
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return Some(packets::empty_messages().into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Body::ClientAck(a) => {
            let delay = {
                let mut s = state.lock().unwrap();
                s.log.push(format!("ACK {}", a.batch_id));
                match a.batch_id {
                    0 => {
                        return Some(packets::ack_error(402, "batchId should assign value").into());
                    }
                    -1 => return None,
                    id => {
                        let first = s.outstanding.keys().next().copied();
                        if first == Some(id) {
                            s.outstanding.remove(&id);
                            return None;
                        }
                        s.ack_error_delay
                    }
                }
            };
            tokio::time::sleep(delay).await;
            Some(
                packets::ack_error(
                    400,
                    format!("ack error , clientId:1001 batchId:{} is not exist", a.batch_id),
                )
                .into(),
            )
        }
        Body::ClientRollback(r) => {
            let mut s = state.lock().unwrap();
            s.log.push(format!("ROLLBACK {}", r.batch_id));
            if !s.running {
                return Some(not_started().into());
            }
            if !s.subscribed.contains_key(&r.client_id) {
                return None;
            }
            let back: Vec<Bytes> = if r.batch_id == 0 {
                std::mem::take(&mut s.outstanding).into_values().flatten().collect()
            } else {
                match s.outstanding.remove(&r.batch_id) {
                    Some(b) => b,
                    None => {
                        return Some(packets::ack_error(400, "rollback of unknown batch").into());
                    }
                }
            };
            for e in back.into_iter().rev() {
                s.queue.push_front(e);
            }
            None
        }
        other => {
            state.lock().unwrap().log.push(format!("OTHER {:?}", other.packet_type()));
            Some(packets::unsupported_type(p.r#type).into())
        }
    }
}

// ---- entries ----

pub fn col(index: i32, name: &str, value: Option<&str>, key: bool, updated: bool) -> Column {
    Column {
        index: Some(index),
        sql_type: Some(if key { -5 } else { 12 }),
        name: Some(name.into()),
        is_key: Some(key),
        updated: Some(updated),
        is_null: Some(value.is_none()),
        value: value.map(Into::into),
        mysql_type: Some(if key { "bigint(20)" } else { "varchar(255)" }.into()),
        ..Column::default()
    }
}

fn header(table: &str, offset: i64, event_type: Option<EventType>) -> Header {
    Header {
        version: Some(1),
        logfile_name: Some("mysql-bin.000001".into()),
        logfile_offset: Some(offset),
        server_id: Some(1),
        serveren_code: Some("UTF-8".into()),
        execute_time: Some(1_700_000_000_000 + offset),
        source_type: Some(2),
        schema_name: Some(if table.is_empty() { "" } else { "test" }.into()),
        table_name: Some(table.into()),
        event_length: Some(50),
        event_type: event_type.map(|t| t as i32),
        ..Header::default()
    }
}

/// An INSERT of row `(id, name)` into `test.<table>`.
pub fn insert(table: &str, id: i64, name: &str) -> Entry {
    let rc = RowChange {
        table_id: Some(100),
        event_type: Some(EventType::Insert as i32),
        is_ddl: Some(false),
        row_datas: vec![RowData {
            after_columns: vec![
                col(0, "id", Some(&id.to_string()), true, true),
                col(1, "name", Some(name), false, true),
            ],
            ..RowData::default()
        }],
        ..RowChange::default()
    };
    Entry {
        header: Some(header(table, 100 + id, Some(EventType::Insert))),
        entry_type: Some(EntryType::Rowdata as i32),
        store_value: Some(rc.encode_to_vec().into()),
    }
}

/// A transaction BEGIN (header without event type, as Java writes it).
pub fn begin(offset: i64) -> Entry {
    Entry {
        header: Some(header("", offset, None)),
        entry_type: Some(EntryType::Transactionbegin as i32),
        store_value: Some(Bytes::new()),
    }
}

/// The table name of an INSERT entry made by [`insert`].
pub fn row_name(e: &Entry) -> String {
    let rc = RowChange::decode(e.store_value()).unwrap();
    rc.row_datas[0].after_columns[1].value().to_owned()
}

/// A ZooKeeper-style ServerRunningData JSON.
#[cfg(all(feature = "zookeeper", feature = "etcd"))]
pub fn running_json(address: &str) -> Vec<u8> {
    format!(r#"{{"active":true,"address":"{address}"}}"#).into_bytes()
}
