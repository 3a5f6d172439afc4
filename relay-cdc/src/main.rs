//! relay-cdc: publishes outbox_events inserts from the WAL to Kafka.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use outbox::kafka::KafkaConfigArg;
use relay_cdc::checks::CheckError;
use relay_cdc::metrics::Metrics;
use relay_cdc::poll::{self, PollConfig};
use relay_cdc::producer::{self, ProducerConfig, Routes};
use relay_cdc::relay::{self, RelayConfig};
use relay_cdc::{ops, replication};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "relay-cdc",
    version,
    about = "Streams outbox_events inserts from a pgoutput slot to Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish the outbox to Kafka (leads the slot, or stands by while another relay leads);
    /// `--source poll` polls the table where logical replication is not allowed.
    Run(RunArgs),
    /// Create or upgrade the outbox (outbox_events, its views, the publication, the relay's
    /// tables); history in _relay_cdc_migrations, a second run is a no-op.
    Migrate(DbArgs),
    /// Print the outbox's SQL, for teams that migrate with their own tool.
    Schema,
    /// Print the slot, its lag and the outbox rows by status.
    Status(SlotArgs),
    /// Re-send failed and parked rows in order (after fixing the cause, e.g. raising a topic's
    /// max.message.bytes) and let their aggregates flow again.
    Republish(RepublishArgs),
    /// Slot maintenance.
    Slot {
        #[command(subcommand)]
        command: SlotCommand,
    },
}

#[derive(Subcommand)]
enum SlotCommand {
    /// Drop the relay's replication slot (stop the relays first; the slot pins WAL while it exists).
    Drop(SlotArgs),
}

#[derive(Args)]
struct DbArgs {
    /// PostgreSQL connection URL (the role needs REPLICATION for `run --source cdc`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Args)]
struct SlotArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Logical replication slot.
    #[arg(long, env = "RELAY_SLOT_NAME", default_value = "outbox_slot")]
    slot_name: String,
}

#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:19092")]
    kafka_bootstrap_servers: String,
    /// Topic events are published to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "game-events")]
    kafka_topic: String,
    /// Optional routing by aggregate type: `aggregate_type=topic,...` (others use --kafka-topic).
    #[arg(long, env = "RELAY_TOPIC_ROUTES", default_value = "", value_parser = producer::parse_routes)]
    topic_routes: Routes,
    /// Largest record the relay produces; lowered to each topic's max.message.bytes.
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 1_000_000)]
    max_message_bytes: usize,
    /// How long the producer waits to fill a batch.
    #[arg(long, env = "RELAY_LINGER_MS", default_value_t = 2)]
    linger_ms: u32,
    /// Extra librdkafka properties for every Kafka client of the relay, `key=value,...`
    /// (security.protocol, sasl.*, ssl.*...; `\,` is a comma inside a value). They override the
    /// defaults, except the delivery guarantee (acks, enable.idempotence).
    #[arg(
        long,
        env = "RELAY_KAFKA_CONFIG",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    kafka_config: KafkaConfigArg,
}

impl KafkaArgs {
    /// The producer settings; fails on a bad RELAY_KAFKA_CONFIG, naming the property.
    fn producer(&self) -> anyhow::Result<ProducerConfig> {
        outbox::kafka::log_build();
        let kafka_config = self
            .kafka_config
            .resolve(producer::KAFKA_CONFIG_SETTING, producer::RESERVED)?;
        Ok(ProducerConfig {
            bootstrap_servers: self.kafka_bootstrap_servers.clone(),
            topic: self.kafka_topic.clone(),
            routes: self.topic_routes.0.clone(),
            max_message_bytes: self.max_message_bytes,
            linger_ms: self.linger_ms,
            kafka_config,
        })
    }
}

/// Where `run` reads the outbox from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Source {
    /// The WAL, through a logical replication slot (wal_level=logical, a REPLICATION role).
    Cdc,
    /// The table: claim `new` rows, publish, mark `sent` (for databases without logical
    /// replication; costs queries while idle and a non-HOT update per row).
    Poll,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    slot: SlotArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Where events come from. With `poll`, the slot name only names the leader lock (shared
    /// with a CDC relay of that name, so the two never run at once).
    #[arg(long, env = "RELAY_SOURCE", value_enum, default_value_t = Source::Cdc)]
    source: Source,
    /// Poll mode: rows claimed, published and marked per round.
    #[arg(long, env = "RELAY_POLL_BATCH", default_value_t = 1000)]
    poll_batch: usize,
    /// Poll mode: pause after a round that found nothing to publish.
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = 500)]
    poll_interval_ms: u64,
    /// Poll mode: a `processing` row claimed longer ago than this was left by a dead poller and
    /// is claimed again (later events of its aggregate wait until then).
    #[arg(long, env = "RELAY_POLL_STALE_SECS", default_value_t = 30)]
    poll_stale_secs: u64,
    /// Publication the slot streams.
    #[arg(long, env = "RELAY_PUBLICATION", default_value = "outbox_pub")]
    publication: String,
    /// Prefix of pg_logical_emit_message records that carry an envelope.
    #[arg(long, env = "RELAY_MESSAGE_PREFIX", default_value = "outbox")]
    message_prefix: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "RELAY_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    metrics_addr: SocketAddr,
    /// Stop reading the WAL while this many events await Kafka or the mark.
    #[arg(long, env = "RELAY_MAX_IN_FLIGHT", default_value_t = 20_000)]
    max_in_flight: usize,
    /// ...or while the events handed to Kafka and not yet acknowledged hold this many bytes
    /// (with --max-in-flight, this bounds the relay's memory, whatever a transaction's size).
    #[arg(long, env = "RELAY_MAX_IN_FLIGHT_BYTES", default_value_t = 16 << 20)]
    max_in_flight_bytes: usize,
    /// Mark delivered rows sent in batches of up to this many...
    #[arg(long, env = "RELAY_MARK_BATCH", default_value_t = 5_000)]
    mark_batch: usize,
    /// ...or after this many milliseconds.
    #[arg(long, env = "RELAY_MARK_INTERVAL_MS", default_value_t = 5)]
    mark_interval_ms: u64,
    #[command(flatten)]
    retention: relay_cdc::retention::RetentionArgs,
}

#[derive(Args)]
struct RepublishArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    outbox::telemetry::init();
    let result = match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Migrate(db) => outbox::migrate::command(&outbox::migrate::RELAY, &db.database_url).await,
        Command::Schema => {
            print!("{}", outbox::migrate::schema_sql(&outbox::migrate::RELAY));
            Ok(())
        }
        Command::Status(args) => ops::status(&args.db.database_url, &args.slot_name).await,
        Command::Republish(args) => match args.kafka.producer() {
            Ok(producer) => ops::republish(&args.db.database_url, &producer).await,
            Err(e) => Err(e),
        },
        Command::Slot {
            command: SlotCommand::Drop(args),
        } => ops::drop_slot(&args.db.database_url, &args.slot_name).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Configuration problems are one line that names the fix.
            if let Some(c) = e.downcast_ref::<CheckError>() {
                outbox::telemetry::fatal(&format!("error: {c}"));
            } else if let Some(r) = e.downcast_ref::<replication::ReplicationError>() {
                outbox::telemetry::fatal(&format!("error: {r}"));
            } else {
                outbox::telemetry::fatal(&format!("error: {e:#}"));
            }
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let producer = args.kafka.producer()?;
    let metrics = Metrics::new();
    let ready = outbox::http::Readiness::default();
    let _server = outbox::http::serve(args.metrics_addr, metrics.registry.clone(), ready.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: draining and stopping");
        let _ = stop_tx.send(true);
    });
    relay_cdc::retention::spawn(&args.slot.db.database_url, &args.retention, &metrics);
    if args.source == Source::Poll {
        let cfg = PollConfig {
            database_url: args.slot.db.database_url,
            slot: args.slot.slot_name,
            producer,
            batch: args.poll_batch.max(1),
            interval: Duration::from_millis(args.poll_interval_ms),
            stale: Duration::from_secs(args.poll_stale_secs.max(1)),
        };
        return poll::run(cfg, metrics, ready, stop_rx).await;
    }
    let cfg = RelayConfig {
        database_url: args.slot.db.database_url,
        slot: args.slot.slot_name,
        publication: args.publication,
        message_prefix: args.message_prefix,
        producer,
        max_in_flight: args.max_in_flight.max(1),
        max_in_flight_bytes: args.max_in_flight_bytes.max(1),
        mark_batch: args.mark_batch.max(1),
        mark_interval: Duration::from_millis(args.mark_interval_ms.max(1)),
    };
    relay::run(cfg, metrics, ready, stop_rx).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")
        .unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
