//! The RabbitMQ producer of MQ mode (AMQP 0-9-1 through `lapin`).
//!
//! As Java Canal: every message goes to `rabbitmq.exchange` with the (dynamic) topic as routing
//! key, persistent (`delivery_mode=2`, `text/plain`); `rabbitmq.deliveryMode` is the exchange's
//! TYPE, and `rabbitmq.queue`/`rabbitmq.routingKey` declare and bind a durable queue. Beyond Java:
//! publisher confirms (a batch is acked only once the broker confirmed every message) and
//! `mandatory` publishing, so a message no queue would receive fails the batch loudly instead of
//! vanishing. A lost connection is reopened on the next send.

use canal_core::mq::MqRecord;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation as AmqpConfirmation, Connection, ExchangeKind};
use tokio::sync::Mutex;

use super::{Confirmation, MqError, Producer};
use crate::config::model::RabbitmqSection;

/// A RabbitMQ producer.
pub struct RabbitProducer {
    section: RabbitmqSection,
    uri: String,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for RabbitProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitProducer").field("section", &self.section).finish_non_exhaustive()
    }
}

/// Percent-encodes what is not an unreserved URI character.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The AMQP URI of `section` (`rabbitmq.host` is `host` or `host:port`).
///
/// # Errors
/// [`MqError::Config`] for an empty host or a bad port.
pub fn amqp_uri(section: &RabbitmqSection) -> Result<String, MqError> {
    let host = section.host.trim();
    if host.is_empty() {
        return Err(MqError::Config("rabbitmq.host is empty".into()));
    }
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p
                .parse()
                .map_err(|_| MqError::Config(format!("rabbitmq.host {host:?}: bad port {p:?}")))?;
            (h, port)
        }
        None => (host, 5672),
    };
    Ok(format!(
        "amqp://{}:{}@{h}:{port}/{}",
        encode(&section.username),
        encode(&section.password),
        encode(&section.virtual_host)
    ))
}

fn exchange_kind(s: &str) -> ExchangeKind {
    match s.to_ascii_lowercase().as_str() {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        _ => ExchangeKind::Custom(s.to_owned()),
    }
}

fn transient(what: &str, e: lapin::Error) -> MqError {
    MqError::Transient(format!("RabbitMQ {what}: {e}"))
}

impl RabbitProducer {
    /// Connects, declares what the settings ask for, and enables publisher confirms.
    ///
    /// # Errors
    /// [`MqError::Config`]; [`MqError::Transient`] when the broker cannot be reached.
    pub async fn open(section: &RabbitmqSection) -> Result<Self, MqError> {
        let me = Self { section: section.clone(), uri: amqp_uri(section)?, link: Mutex::new(None) };
        let link = me.connect().await?;
        *me.link.lock().await = Some(link);
        Ok(me)
    }

    async fn connect(&self) -> Result<(Connection, Channel), MqError> {
        let conn = Connection::connect(&self.uri, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| transient("connect", e))?;
        let ch = conn.create_channel().await.map_err(|e| transient("channel", e))?;
        let s = &self.section;
        if let Some(kind) = s.delivery_mode.as_deref().filter(|k| !k.is_empty()) {
            if s.exchange.is_empty() {
                return Err(MqError::Config(
                    "rabbitmq.deliveryMode (the exchange type) is set but rabbitmq.exchange is empty"
                        .into(),
                ));
            }
            let opts = ExchangeDeclareOptions { durable: true, ..Default::default() };
            ch.exchange_declare(
                s.exchange.as_str().into(),
                exchange_kind(kind),
                opts,
                FieldTable::default(),
            )
            .await
            .map_err(|e| transient("exchange.declare", e))?;
        }
        if let Some(queue) = s.queue.as_deref().filter(|q| !q.is_empty()) {
            let opts = QueueDeclareOptions { durable: true, ..Default::default() };
            ch.queue_declare(queue.into(), opts, FieldTable::default())
                .await
                .map_err(|e| transient("queue.declare", e))?;
            if !s.exchange.is_empty() {
                let key = s.routing_key.clone().unwrap_or_default();
                ch.queue_bind(
                    queue.into(),
                    s.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| transient("queue.bind", e))?;
            }
        }
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| transient("confirm.select", e))?;
        Ok((conn, ch))
    }
}

#[async_trait::async_trait]
impl Producer for RabbitProducer {
    fn partitioned(&self) -> bool {
        false
    }

    async fn send(&self, records: Vec<MqRecord>) -> Result<Confirmation, MqError> {
        let mut link = self.link.lock().await;
        let usable =
            link.as_ref().is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !usable {
            *link = None;
            *link = Some(self.connect().await?);
        }
        let (_, ch) = link.as_ref().expect("connected above");
        let props =
            BasicProperties::default().with_delivery_mode(2).with_content_type("text/plain".into());
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let mut confirms = Vec::with_capacity(records.len());
        for r in records {
            match ch
                .basic_publish(
                    self.section.exchange.as_str().into(),
                    r.topic.as_str().into(),
                    opts,
                    &r.payload,
                    props.clone(),
                )
                .await
            {
                Ok(c) => confirms.push((r.topic, c)),
                Err(e) => {
                    *link = None;
                    return Err(transient("basic.publish", e));
                }
            }
        }
        let exchange = self.section.exchange.clone();
        Ok(Box::pin(async move {
            for (topic, c) in confirms {
                match c.await {
                    Ok(AmqpConfirmation::Ack(None)) => {}
                    Ok(AmqpConfirmation::Ack(Some(_))) => {
                        return Err(MqError::Fatal(format!(
                            "RabbitMQ returned a message as unroutable: no queue is bound to \
                             exchange {exchange:?} for routing key {topic:?}"
                        )));
                    }
                    Ok(AmqpConfirmation::Nack(_)) => {
                        return Err(MqError::Transient(format!(
                            "RabbitMQ refused (nack) a message for routing key {topic:?}"
                        )));
                    }
                    Ok(AmqpConfirmation::NotRequested) => {
                        return Err(MqError::Fatal("publisher confirms are not enabled".into()));
                    }
                    Err(e) => return Err(transient("confirm", e)),
                }
            }
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encodes_credentials_and_vhost() {
        let s = RabbitmqSection {
            host: "10.0.0.1:5673".into(),
            username: "u@x".into(),
            password: "p/w:d".into(),
            virtual_host: "/".into(),
            ..RabbitmqSection::default()
        };
        assert_eq!(amqp_uri(&s).unwrap(), "amqp://u%40x:p%2Fw%3Ad@10.0.0.1:5673/%2F");
        let bad = RabbitmqSection { host: "h:notaport".into(), ..RabbitmqSection::default() };
        assert!(matches!(amqp_uri(&bad), Err(MqError::Config(_))));
        let empty = RabbitmqSection { host: " ".into(), ..RabbitmqSection::default() };
        assert!(matches!(amqp_uri(&empty), Err(MqError::Config(_))));
    }
}
