//! The dead-letter topic `<topic>.dlq`: what cannot be handled goes there with headers saying
//! why and where from, and `consumer redrive` sends it back to its source topic.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use outbox::kafka::LogContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

use crate::config::KafkaArgs;
use crate::kafka::{self, DlqProducer};
use crate::message::Item;

/// Headers added to a dead letter (the original headers are kept).
pub mod header {
    pub const ERROR: &str = "dlq.error";
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// The consumed_events id the message was recorded under (derived when it had none).
    pub const EVENT_ID: &str = "dlq.event.id";
    /// Prefix of every header above; redrive strips them.
    pub const PREFIX: &str = "dlq.";
}

/// Writes dead letters.
pub struct DeadLetters {
    producer: DlqProducer,
    source_topic: String,
    topic: String,
}

/// What a dead letter says about its failure.
pub struct Failure<'a> {
    pub event_id: Uuid,
    pub error: &'a str,
    pub attempts: u32,
}

impl DeadLetters {
    pub fn new(args: &KafkaArgs) -> anyhow::Result<Self> {
        Ok(Self {
            producer: kafka::producer(args)?,
            source_topic: args.kafka_topic.clone(),
            topic: args.dlq_topic(),
        })
    }

    /// Sends one dead letter and waits for the broker's acknowledgement (acks=all), so that it
    /// is durable before the transaction that records it as `dlq` commits.
    pub async fn send(&self, item: &Item, f: &Failure<'_>) -> Result<(), KafkaError> {
        let mut headers = item.headers.clone().unwrap_or_default();
        for (k, v) in [
            (header::ERROR, f.error.to_string()),
            (header::SOURCE_TOPIC, self.source_topic.clone()),
            (header::SOURCE_PARTITION, item.partition.to_string()),
            (header::SOURCE_OFFSET, item.offset.to_string()),
            (header::ATTEMPTS, f.attempts.to_string()),
            (header::EVENT_ID, f.event_id.to_string()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(&v),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(k) = &item.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &item.value {
            record = record.payload(v.as_slice());
        }
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// Sends every message of the dead-letter topic that this group has not redriven yet back to
/// its source topic (header `dlq.source.topic`), without the `dlq.*` headers. Messages that
/// arrive in the DLQ while it runs are left for the next run. Returns how many were sent.
///
/// Offsets of the redrive group (`<group>-redrive`) are committed only after every message is
/// acknowledged: a crash mid-way redrives some messages twice, which the consumer's dedup absorbs.
pub async fn redrive(args: &KafkaArgs) -> anyhow::Result<u64> {
    let dlq = args.dlq_topic();
    let group = format!("{}-redrive", args.kafka_consumer_group);
    let consumer: StreamConsumer<LogContext> = args
        .client_config(&[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])?
        .create_with_context(kafka::log_context())
        .context("creating the redrive consumer")?;
    let producer = kafka::producer(args)?;
    let timeout = Duration::from_secs(10);

    let metadata = consumer
        .fetch_metadata(Some(&dlq), timeout)
        .with_context(|| format!("reading metadata of {dlq} from {}", args.kafka_bootstrap_servers))?;
    let Some(topic) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == dlq && t.error().is_none())
    else {
        tracing::info!(%dlq, "no dead-letter topic, nothing to redrive");
        return Ok(0);
    };
    // Each partition is read up to its high watermark as of now.
    let mut assignment = TopicPartitionList::new();
    let mut end = HashMap::new();
    for p in topic.partitions() {
        let (_, high) = consumer.fetch_watermarks(&dlq, p.id(), timeout)?;
        end.insert(p.id(), high);
        assignment.add_partition_offset(&dlq, p.id(), Offset::Stored)?;
    }
    let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    for e in committed.elements() {
        if let Offset::Offset(o) = e.offset() {
            next.insert(e.partition(), o);
        }
    }
    consumer.assign(&assignment)?;

    let done = |next: &HashMap<i32, i64>| {
        end.iter()
            .all(|(p, high)| next.get(p).copied().unwrap_or(0) >= *high)
    };
    let mut deliveries = Vec::new();
    while !done(&next) {
        let m = tokio::time::timeout(timeout, consumer.recv())
            .await
            .with_context(|| format!("no message from {dlq} for {timeout:?} before its end was reached"))??;
        if end.get(&m.partition()).is_none_or(|high| m.offset() >= *high) {
            continue;
        }
        let target =
            header_value(m.headers(), header::SOURCE_TOPIC).unwrap_or_else(|| args.kafka_topic.clone());
        let mut headers = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter().filter(|h| !h.key.starts_with(header::PREFIX)) {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&target).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        // Enqueue without waiting for the acknowledgement; they are awaited together below.
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e).context("redriving a dead letter"),
            }
        }
        next.insert(m.partition(), m.offset() + 1);
    }
    let sent = deliveries.len() as u64;
    for r in futures::future::join_all(deliveries).await {
        r.context("redrive delivery cancelled")?
            .map_err(|(e, _)| e)
            .context("redriving a dead letter")?;
    }
    let mut offsets = TopicPartitionList::new();
    for (p, o) in &next {
        offsets.add_partition_offset(&dlq, *p, Offset::Offset(*o))?;
    }
    if sent > 0 {
        consumer
            .commit(&offsets, CommitMode::Sync)
            .context("committing the redrive group's offsets")?;
    }
    tracing::info!(%dlq, sent, %group, "redrive finished");
    Ok(sent)
}

fn header_value<H: Headers>(headers: Option<&H>, name: &str) -> Option<String> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Creates `<topic>.dlq` when it is missing (one partition keeps dead letters in failure order;
/// replication as the broker's default), so dead-lettering never depends on topic
/// auto-creation.
pub async fn ensure_topic(args: &KafkaArgs) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<LogContext> = args
        .client_config(&[])?
        .create_with_context(kafka::log_context())
        .context("creating Kafka admin client")?;
    let dlq = args.dlq_topic();
    let results = admin
        .create_topics(
            &[NewTopic::new(&dlq, 1, TopicReplication::Fixed(-1))],
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(10)))
                .request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| {
            format!(
                "creating the dead-letter topic {dlq}: is Kafka reachable at KAFKA_BOOTSTRAP_SERVERS={}?",
                args.kafka_bootstrap_servers
            )
        })?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(%dlq, "created the dead-letter topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating the dead-letter topic {t}: {e}"),
        }
    }
    Ok(())
}
