//! A minimal Canal protocol client for the server's tests: speaks the frames by hand so tests
//! see exactly what the server sends.

use std::time::Duration;

use bytes::BytesMut;
use canal_core::protocol::auth::client_password;
use canal_core::protocol::codec::{FrameDecoder, encode_frame};
use canal_core::protocol::packet::{
    Ack, ClientAck, ClientAuth, ClientRollback, Get, Handshake, Messages, Packet, PacketType, Sub,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    pub sock: TcpStream,
    buf: BytesMut,
    seed: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let sock = TcpStream::connect(addr).await.unwrap();
        let mut c = Client { sock, buf: BytesMut::new(), seed: vec![] };
        let hs = c.read().await.expect("handshake");
        assert_eq!(hs.r#type, PacketType::Handshake as i32);
        assert_eq!(hs.version, Some(1));
        c.seed = Handshake::decode(hs.body).unwrap().seeds;
        assert_eq!(c.seed.len(), 8);
        c
    }

    pub async fn send(&mut self, t: PacketType, body: Vec<u8>) {
        let p = Packet { r#type: t as i32, body: body.into(), ..Default::default() };
        let mut out = BytesMut::new();
        encode_frame(&p, &mut out).unwrap();
        self.sock.write_all(&out).await.unwrap();
    }

    /// Next packet, or None when the server closed the connection.
    pub async fn read(&mut self) -> Option<Packet> {
        let dec = FrameDecoder::new();
        loop {
            if let Some(p) = dec.decode(&mut self.buf).unwrap() {
                return Some(p);
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.sock.read_buf(&mut self.buf))
                .await
                .expect("server answers within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    pub async fn ack(&mut self) -> Ack {
        let p = self.read().await.expect("an ACK");
        assert_eq!(p.r#type, PacketType::Ack as i32, "{p:?}");
        Ack::decode(p.body).unwrap()
    }

    pub async fn auth(&mut self, user: &str, password: Option<&str>) -> Ack {
        let pw = password.map(|p| client_password(&self.seed, p)).unwrap_or_default();
        let body =
            ClientAuth { username: user.into(), password: pw.into_bytes(), ..Default::default() };
        self.send(PacketType::Clientauthentication, body.encode_to_vec()).await;
        self.ack().await
    }

    pub async fn subscribe(&mut self, dest: &str, client: &str) -> Ack {
        let body =
            Sub { destination: dest.into(), client_id: client.into(), filter: String::new() };
        self.send(PacketType::Subscription, body.encode_to_vec()).await;
        self.ack().await
    }

    pub async fn get(&mut self, dest: &str, size: i32, timeout: i64) -> Packet {
        self.get_lingering(dest, size, timeout, None).await
    }

    /// A GET with canal-rs's `linger_micros` (docs/protocol.md#get-linger).
    pub async fn get_lingering(
        &mut self,
        dest: &str,
        size: i32,
        timeout: i64,
        linger_micros: Option<i64>,
    ) -> Packet {
        let body = Get {
            destination: dest.into(),
            client_id: "1001".into(),
            fetch_size: size,
            timeout: Some(timeout),
            unit: Some(2),
            auto_ack: Some(false),
            linger_micros,
        };
        self.send(PacketType::Get, body.encode_to_vec()).await;
        self.read().await.expect("a GET reply")
    }

    pub async fn client_ack_on(&mut self, dest: &str, batch_id: i64) {
        let body = ClientAck { destination: dest.into(), client_id: "1001".into(), batch_id };
        self.send(PacketType::Clientack, body.encode_to_vec()).await;
    }

    pub async fn rollback_on(&mut self, dest: &str, batch_id: i64) {
        let body = ClientRollback { destination: dest.into(), client_id: "1001".into(), batch_id };
        self.send(PacketType::Clientrollback, body.encode_to_vec()).await;
    }

    pub async fn client_ack(&mut self, batch_id: i64) {
        let body = ClientAck { destination: "example".into(), client_id: "1001".into(), batch_id };
        self.send(PacketType::Clientack, body.encode_to_vec()).await;
    }

    pub async fn rollback(&mut self, batch_id: i64) {
        let body =
            ClientRollback { destination: "example".into(), client_id: "1001".into(), batch_id };
        self.send(PacketType::Clientrollback, body.encode_to_vec()).await;
    }
}

pub fn messages(p: Packet) -> Messages {
    assert_eq!(p.r#type, PacketType::Messages as i32, "{p:?}");
    Messages::decode(p.body).unwrap()
}
