//! Settings of `consumer run` and `consumer redrive`. Each is a `--flag` and an environment
//! variable; the shared names are fixed by the README's configuration table.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use outbox::kafka::KafkaConfigArg;
use rdkafka::ClientConfig;

/// Where events are read from and dead letters written to.
#[derive(Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:19092")]
    pub kafka_bootstrap_servers: String,
    /// Topic to consume; messages that cannot be handled go to `<topic>.dlq`.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "game-events")]
    pub kafka_topic: String,
    /// Consumer group. A new group re-reads the topic; already applied events are skipped.
    #[arg(long, env = "KAFKA_CONSUMER_GROUP", default_value = "game-consumer")]
    pub kafka_consumer_group: String,
    /// Extra librdkafka properties for every Kafka client of the consumer, `key=value,...`
    /// (security.protocol, sasl.*, ssl.*, session.timeout.ms...; `\,` is a comma inside a
    /// value). They override the defaults, except what exactly-once applying rests on.
    #[arg(
        long,
        env = "CONSUMER_KAFKA_CONFIG",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub kafka_config: KafkaConfigArg,
}

/// The setting that holds the consumer's extra librdkafka properties.
pub const KAFKA_CONFIG_SETTING: &str = "CONSUMER_KAFKA_CONFIG";

/// Properties `CONSUMER_KAFKA_CONFIG` may not set, and why.
pub const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set KAFKA_BOOTSTRAP_SERVERS instead"),
    ("metadata.broker.list", "set KAFKA_BOOTSTRAP_SERVERS instead"),
    ("group.id", "set KAFKA_CONSUMER_GROUP instead"),
    (
        "enable.auto.offset.store",
        "the consumer stores an offset only after the database commit of its message",
    ),
    (
        "enable.idempotence",
        "dead letters and redrives always use the idempotent producer",
    ),
    ("acks", "dead letters and redrives always use acks=all"),
    (
        "request.required.acks",
        "dead letters and redrives always use acks=all",
    ),
];

impl KafkaArgs {
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.kafka_topic)
    }

    /// The client configuration every Kafka client starts from: brokers, our defaults, then
    /// CONSUMER_KAFKA_CONFIG. Fails on a bad CONSUMER_KAFKA_CONFIG, naming the property.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> anyhow::Result<ClientConfig> {
        let props = self.kafka_config.resolve(KAFKA_CONFIG_SETTING, RESERVED)?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka_bootstrap_servers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        props.apply_to(&mut c);
        Ok(c)
    }
}

/// Settings of `consumer run`.
#[derive(Args, Clone)]
pub struct RunConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "CONSUMER_METRICS_ADDR", default_value = "0.0.0.0:9465")]
    pub metrics_addr: SocketAddr,
    /// Attempts to apply a message the database rejects before it goes to the dead-letter topic.
    #[arg(long, env = "CONSUMER_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Most messages applied in one database transaction.
    #[arg(long, env = "CONSUMER_BATCH_SIZE", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch_size: u32,
    /// Transactions a batch is applied in at once, each over its own partitions (and its own
    /// database connection). Events of one partition are always applied in order.
    #[arg(long, env = "CONSUMER_APPLY_CONCURRENCY", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub apply_concurrency: u32,
    /// How long a batch waits for more messages after its first one, in milliseconds.
    #[arg(long, env = "CONSUMER_BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,
    /// Interval of the `[metrics] ok=.. dup=.. dlq=.. retry=..` log line, in seconds.
    #[arg(long, env = "CONSUMER_METRICS_LOG_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_log_secs: u64,
}

impl RunConfig {
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub fn metrics_log_interval(&self) -> Duration {
        Duration::from_secs(self.metrics_log_secs)
    }
}
