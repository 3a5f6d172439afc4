//! Kafka clients. The group consumer never stores an offset by itself
//! (`enable.auto.offset.store=false`): the service stores offsets after the database commit and
//! librdkafka commits what is stored, periodically, on revocation and on close.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KAFKA_CONFIG_SETTING, KafkaArgs};
use crate::metrics::Metrics;
use outbox::kafka::{ClientLog, LogContext};
use rdkafka::config::RDKafkaLogLevel;

pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Callbacks of the group consumer. They run inside `recv()`, never while a batch is being
/// applied, because the service polls only between batches.
pub struct GroupContext {
    metrics: Metrics,
    revoked: Mutex<HashSet<i32>>,
    log: ClientLog,
}

impl GroupContext {
    /// Partitions revoked since the last call: messages of theirs that are not applied yet must
    /// be dropped, since the next owner reads them again from the committed offset.
    pub fn take_revoked(&self) -> HashSet<i32> {
        std::mem::take(&mut *self.revoked.lock().expect("lock poisoned"))
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.set_lag(&statistics);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Everything stored was committed to PostgreSQL: hand it to the next owner.
                commit_stored(consumer, "revocation");
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions revoked");
                self.revoked.lock().expect("lock poisoned").extend(partitions);
            }
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                outbox::warn_throttled!(std::time::Duration::from_secs(5), error = %e, "committing offsets failed; the next commit retries")
            }
        }
    }
}

/// Commits the stored offsets now; "nothing stored" is not an error.
pub fn commit_stored<C: Consumer<X>, X: ConsumerContext>(consumer: &C, why: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            outbox::warn_throttled!(std::time::Duration::from_secs(5), error = %e, why, "committing stored offsets failed")
        }
    }
}

/// The group consumer, subscribed to the topic.
pub fn group_consumer(args: &KafkaArgs, metrics: Metrics) -> anyhow::Result<GroupConsumer> {
    let consumer: GroupConsumer = args
        .client_config(&[
            ("group.id", &args.kafka_consumer_group),
            ("client.id", "outbox-consumer"),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            // A new group starts at the beginning: that is the seed's replay recipe.
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("statistics.interval.ms", "5000"),
            // The prefetch queue is the bulk of the memory; 16 MB still keeps batches full.
            ("queued.max.messages.kbytes", "16384"),
        ])?
        .create_with_context(GroupContext {
            metrics,
            revoked: Mutex::default(),
            log: ClientLog::new(KAFKA_CONFIG_SETTING),
        })
        .context("creating the Kafka consumer (check CONSUMER_KAFKA_CONFIG)")?;
    consumer
        .subscribe(&[&args.kafka_topic])
        .with_context(|| format!("subscribing to KAFKA_TOPIC={}", args.kafka_topic))?;
    Ok(consumer)
}

/// Stores `offset + 1` of the last applied message of each partition.
pub fn store_offsets(consumer: &GroupConsumer, topic: &str, last: &[(i32, i64)]) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in last {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))?;
    }
    consumer.store_offsets(&tpl)
}

/// The dead-letter and redrive producer.
pub type DlqProducer = FutureProducer<LogContext>;

/// An idempotent producer (acks=all) for dead letters and redrives.
pub fn producer(args: &KafkaArgs) -> anyhow::Result<DlqProducer> {
    args.client_config(&[
        ("client.id", "outbox-consumer-dlq"),
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "5"),
    ])?
    .create_with_context(log_context())
    .context("creating the Kafka producer (check CONSUMER_KAFKA_CONFIG)")
}

/// The context of the consumer's short-lived and auxiliary clients.
pub fn log_context() -> LogContext {
    LogContext(ClientLog::new(KAFKA_CONFIG_SETTING))
}
