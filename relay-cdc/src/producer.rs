//! The Kafka side: an idempotent producer (acks=all) whose delivery reports come back on a
//! channel, tagged with the caller's token, so the relay loop never waits on one future per
//! event.

use std::collections::HashMap;
use std::time::Duration;

use outbox::Envelope;
use outbox::kafka::{ClientLog, KafkaProperties, LogContext};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::mpsc;

/// Identifies an event across produce and delivery.
pub type Token = u64;

/// What Kafka said about one event.
#[derive(Debug)]
pub struct Delivery {
    pub token: Token,
    pub result: Result<(i32, i64), KafkaError>,
}

pub struct Context {
    tx: mpsc::UnboundedSender<Delivery>,
    log: ClientLog,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

/// The setting that holds the relay's extra librdkafka properties.
pub const KAFKA_CONFIG_SETTING: &str = "RELAY_KAFKA_CONFIG";

/// Properties `RELAY_KAFKA_CONFIG` may not set, and why: the delivery guarantee rests on the
/// first ones, the others have settings of their own.
pub const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set KAFKA_BOOTSTRAP_SERVERS instead"),
    ("metadata.broker.list", "set KAFKA_BOOTSTRAP_SERVERS instead"),
    (
        "enable.idempotence",
        "the relay's producer is always idempotent (no duplicates or reordering on retries)",
    ),
    (
        "acks",
        "the relay always uses acks=all (a row is marked sent once every in-sync replica has it)",
    ),
    (
        "request.required.acks",
        "the relay always uses acks=all (a row is marked sent once every in-sync replica has it)",
    ),
    ("transactional.id", "the relay does not use Kafka transactions"),
    ("message.max.bytes", "set RELAY_MAX_MESSAGE_BYTES instead"),
    ("linger.ms", "set RELAY_LINGER_MS instead"),
    ("queue.buffering.max.ms", "set RELAY_LINGER_MS instead"),
];

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Self::DeliveryOpaque) {
        let result = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        // The receiver only goes away at shutdown, when reports no longer matter.
        let _ = self.tx.send(Delivery {
            token: *token,
            result,
        });
    }
}

/// Why an event could not be handed to the producer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The local queue is full: stop reading the stream until deliveries drain it.
    #[error("producer queue full")]
    QueueFull,
    /// The event can never be delivered as it is (too large, invalid topic...).
    #[error("{0}")]
    Permanent(KafkaError),
}

pub struct EventProducer {
    inner: ThreadedProducer<Context>,
    default_topic: String,
    routes: Vec<(String, String)>,
    /// Largest record accepted (configured, lowered to each topic's `max.message.bytes`),
    /// checked before producing so a too-large event fails at once, before later events of its
    /// aggregate are sent.
    max_message_bytes: usize,
    topic_limits: HashMap<String, usize>,
    /// The settings every client of the relay is created with (brokers and RELAY_KAFKA_CONFIG).
    client: ClientConfig,
}

/// Producer settings from the command line.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    /// `aggregate_type -> topic` routes; others go to `topic`.
    pub routes: Vec<(String, String)>,
    pub max_message_bytes: usize,
    pub linger_ms: u32,
    /// RELAY_KAFKA_CONFIG: applied to every client, over our defaults (`Debug` hides secrets).
    pub kafka_config: KafkaProperties,
}

impl ProducerConfig {
    /// Brokers and the user's properties: what every Kafka client of the relay starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        self.kafka_config.apply_to(&mut c);
        c
    }
}

impl EventProducer {
    pub fn new(cfg: &ProducerConfig) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Delivery>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Never give up on a message because Kafka is down: 0 = retry until delivered.
            .set("message.timeout.ms", "0")
            // Reconnect within a second of the broker's return (the default backs off to 10 s).
            .set("reconnect.backoff.max.ms", "1000")
            .set("linger.ms", cfg.linger_ms.to_string())
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("compression.type", "lz4")
            .set("message.max.bytes", cfg.max_message_bytes.max(1000).to_string());
        // The user's properties win over the defaults above (RESERVED ones are refused earlier).
        cfg.kafka_config.apply_to(&mut config);
        let inner: ThreadedProducer<Context> = config.create_with_context(Context {
            tx,
            log: ClientLog::new(KAFKA_CONFIG_SETTING),
        })?;
        Ok((
            Self {
                inner,
                default_topic: cfg.topic.clone(),
                routes: cfg.routes.clone(),
                max_message_bytes: cfg.max_message_bytes,
                topic_limits: HashMap::new(),
                client: cfg.client_config(),
            },
            rx,
        ))
    }

    /// The topic an event goes to: a route for its aggregate type, or the default topic.
    pub fn topic_for(&self, aggregate_type: &str) -> &str {
        self.routes
            .iter()
            .find(|(a, _)| a == aggregate_type)
            .map(|(_, t)| t.as_str())
            .unwrap_or(&self.default_topic)
    }

    /// Hands one event to librdkafka; its delivery report arrives later on the channel.
    pub fn send(&self, token: Token, event: &Envelope, value: &[u8]) -> Result<(), SendError> {
        let topic = self.topic_for(&event.aggregate_type);
        // Record overhead (headers, framing) is small; count it generously.
        let size = value.len() + event.aggregate_id.len() + 256;
        let limit = self
            .topic_limits
            .get(topic)
            .copied()
            .unwrap_or(usize::MAX)
            .min(self.max_message_bytes);
        if size > limit {
            return Err(SendError::Permanent(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge,
            )));
        }
        let mut headers = OwnedHeaders::new_with_capacity(4);
        for (key, v) in event.headers() {
            headers = headers.insert(Header {
                key,
                value: Some(v.as_bytes()),
            });
        }
        let record = BaseRecord::with_opaque_to(topic, Box::new(token))
            .key(event.aggregate_id.as_bytes())
            .payload(value)
            .headers(headers);
        match self.inner.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(SendError::QueueFull),
            Err((e, _)) => Err(SendError::Permanent(e)),
        }
    }

    /// Waits for everything queued to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.inner.flush(timeout)?;
        Ok(())
    }

    /// Reads `max.message.bytes` of every topic this producer writes to. Topics that do not
    /// exist yet keep no limit of their own (the broker default applies when they are created).
    pub async fn refresh_topic_limits(&mut self) -> anyhow::Result<()> {
        let admin: AdminClient<LogContext> = self
            .client
            .create_with_context(LogContext(ClientLog::new(KAFKA_CONFIG_SETTING)))?;
        let mut topics: Vec<&str> = vec![self.default_topic.as_str()];
        topics.extend(self.routes.iter().map(|(_, t)| t.as_str()));
        let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let results = admin
            .describe_configs(
                &specs,
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(5))),
            )
            .await?;
        for (topic, result) in topics.iter().zip(results) {
            let limit = result.ok().and_then(|r| {
                r.get("max.message.bytes")
                    .and_then(|e| e.value.as_deref()?.parse().ok())
            });
            match limit {
                Some(l) => {
                    if self.topic_limits.insert(topic.to_string(), l) != Some(l) {
                        tracing::info!(topic, max_message_bytes = l, "topic size limit");
                    }
                }
                None => {
                    self.topic_limits.remove(*topic);
                }
            }
        }
        Ok(())
    }

    /// Is Kafka reachable? Metadata for the default topic, with a short timeout. When the
    /// broker refused our credentials or TLS handshake meanwhile, that is the error returned
    /// (rather than a timeout).
    pub fn check(&self, timeout: Duration) -> Result<(), KafkaError> {
        let client = self.inner.client();
        client
            .fetch_metadata(Some(&self.default_topic), timeout)
            .map(|_| ())
            .map_err(|e| {
                if client
                    .context()
                    .log
                    .auth_failed_within(timeout + Duration::from_secs(30))
                {
                    KafkaError::MetadataFetch(RDKafkaErrorCode::Authentication)
                } else {
                    e
                }
            })
    }
}

/// A delivery error that will not go away by retrying the same message.
pub fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | MessageBatchTooLarge
                | TopicAuthorizationFailed
                | InvalidRecord
                | UnknownTopic
                | InvalidTopic
        )
    )
}

/// `aggregate_type -> topic` routes (one command-line value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(pub Vec<(String, String)>);

/// Parses `aggregate_type=topic,...`.
pub fn parse_routes(s: &str) -> Result<Routes, String> {
    s.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('=') {
            Some((a, t)) if !a.trim().is_empty() && !t.trim().is_empty() => {
                Ok((a.trim().to_string(), t.trim().to_string()))
            }
            _ => Err(format!("route {r:?} is not aggregate_type=topic")),
        })
        .collect::<Result<_, _>>()
        .map(Routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_reject_garbage() {
        assert_eq!(
            parse_routes("game=game-events, player = players").unwrap().0,
            [
                ("game".into(), "game-events".into()),
                ("player".into(), "players".into())
            ]
        );
        assert!(parse_routes("").unwrap().0.is_empty());
        assert!(parse_routes("game").unwrap_err().contains("aggregate_type=topic"));
        assert!(parse_routes("=x").is_err());
    }
}
