//! Settings of `consumer run` and `consumer redrive`. Each is a `--flag` and an environment
//! variable; the shared names are fixed by the README's configuration table.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
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
    /// (security.protocol, sasl.*, session.timeout.ms, ...); they override the defaults.
    #[arg(long, env = "CONSUMER_KAFKA_CONFIG", default_value = "", hide_env_values = true,
          value_parser = parse_properties)]
    pub kafka_config: Properties,
}

/// librdkafka properties given on the command line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties(pub Vec<(String, String)>);

fn parse_properties(s: &str) -> anyhow::Result<Properties> {
    let mut props = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("CONSUMER_KAFKA_CONFIG: `{pair}` is not key=value");
        };
        props.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Properties(props))
}

impl KafkaArgs {
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.kafka_topic)
    }

    /// The client configuration every Kafka client starts from: brokers, then the overrides.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka_bootstrap_servers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.kafka_config.0 {
            c.set(k, v);
        }
        c
    }
}

/// Settings of `consumer run`.
#[derive(Args, Clone)]
pub struct RunConfig {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@localhost:5432/bot_game_test",
        hide_default_value = true,
        hide_env_values = true
    )]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_pairs_and_reject_garbage() {
        let p = parse_properties(" session.timeout.ms=6000, security.protocol = SSL ,").unwrap();
        assert_eq!(
            p.0,
            [
                ("session.timeout.ms".to_string(), "6000".to_string()),
                ("security.protocol".to_string(), "SSL".to_string())
            ]
        );
        assert_eq!(parse_properties("").unwrap(), Properties::default());
        assert!(parse_properties("oops").is_err());
    }
}
