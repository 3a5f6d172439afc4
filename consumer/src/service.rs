//! `consumer run`: collect a batch, apply it in one transaction, store its offsets, repeat.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use outbox::http::Readiness;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::apply::Applier;
use crate::config::RunConfig;
use crate::dlq::{self, DeadLetters};
use crate::kafka::{self, GroupConsumer};
use crate::message::Item;
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;

/// A started consumer: connected, subscribed, serving `/metrics`.
pub struct Service {
    cfg: RunConfig,
    consumer: GroupConsumer,
    applier: Applier,
    metrics: Metrics,
    metrics_addr: SocketAddr,
    http: JoinHandle<()>,
}

impl Service {
    /// Connects to PostgreSQL and Kafka, checks the schema, creates the dead-letter topic when it
    /// is missing, serves the operations endpoint and subscribes. An error here is a
    /// configuration problem and names the setting to fix.
    pub async fn start(cfg: RunConfig) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&cfg.database_url)
            .await
            .context("connecting to PostgreSQL (check DATABASE_URL)")?;
        check_schema(&pool).await?;
        dlq::ensure_topic(&cfg.kafka).await?;
        let metrics = Metrics::new();
        let ready = Readiness::default();
        let (metrics_addr, http) = outbox::http::serve(cfg.metrics_addr, metrics.registry(), ready.clone())
            .await
            .context("CONSUMER_METRICS_ADDR")?;
        let consumer = kafka::group_consumer(&cfg.kafka, metrics.clone())?;
        let applier = Applier {
            pool,
            topic: cfg.kafka.kafka_topic.clone(),
            dead_letters: DeadLetters::new(&cfg.kafka)?,
            max_attempts: cfg.max_attempts,
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        ready.set(true);
        tracing::info!(topic = %cfg.kafka.kafka_topic, group = %cfg.kafka.kafka_consumer_group,
                       dlq = %cfg.kafka.dlq_topic(), batch_size = cfg.batch_size, "consuming");
        Ok(Self {
            cfg,
            consumer,
            applier,
            metrics,
            metrics_addr,
            http,
        })
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Where `/metrics` is served (the actual port when the configured one was 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Runs until `signal` completes. The batch in hand is then finished (or, when the database
    /// is down, abandoned uncommitted), the stored offsets are committed and the consumer leaves
    /// its group.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) {
        let shutdown = Shutdown::new(signal);
        let log = tokio::spawn(metrics::log_periodically(
            self.metrics.clone(),
            self.cfg.metrics_log_interval(),
        ));
        while let Some(batch) = self.next_batch(&shutdown).await {
            if !batch.is_empty() {
                let span = tracing::info_span!("batch", messages = batch.len());
                let Some(outcome) = self.applier.apply(&batch, &shutdown).instrument(span).await else {
                    break;
                };
                self.store_offsets(&batch);
                self.metrics
                    .record(&outcome, batch.iter().map(|i| i.received.elapsed()));
                tracing::debug!(?outcome, "batch committed");
            }
            if shutdown.requested() {
                break;
            }
        }
        kafka::commit_stored(&self.consumer, "shutdown");
        log.abort();
        self.http.abort();
        tracing::info!("{}", self.metrics.summary_line());
        // Closing leaves the group (after committing, via the revocation callback).
        drop(self.consumer);
        tracing::info!("consumer stopped");
    }

    /// The next batch: waits for a first message, then takes what arrives within the linger
    /// time, up to the batch size. `None` once shutdown is requested with nothing in hand.
    async fn next_batch(&self, shutdown: &Shutdown) -> Option<Vec<Item>> {
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.wait() => return None,
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        self.push(&mut batch, &m);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.wait() => return None,
                        }
                    }
                },
            }
        }
        let linger = tokio::time::sleep(self.cfg.batch_linger());
        tokio::pin!(linger);
        while batch.len() < self.cfg.batch_size as usize {
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                () = &mut linger => break,
                m = self.consumer.recv() => match m {
                    Ok(m) => self.push(&mut batch, &m),
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        break;
                    }
                },
            }
        }
        self.drop_revoked(&mut batch);
        Some(batch)
    }

    fn push(&self, batch: &mut Vec<Item>, m: &BorrowedMessage<'_>) {
        // A message returned after a revocation belongs to the new assignment; those before it
        // may not, so they are checked first.
        self.drop_revoked(batch);
        batch.push(Item::from_message(&self.cfg.kafka.kafka_topic, m));
    }

    /// Drops unapplied messages of partitions revoked meanwhile: their next owner (perhaps this
    /// consumer again) reads them from the committed offset, and storing an offset past them
    /// later would be wrong.
    fn drop_revoked(&self, batch: &mut Vec<Item>) {
        let revoked: HashSet<i32> = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let before = batch.len();
        batch.retain(|i| !revoked.contains(&i.partition));
        if batch.len() < before {
            tracing::info!(
                dropped = before - batch.len(),
                "dropped unapplied messages of revoked partitions"
            );
        }
    }

    fn store_offsets(&self, batch: &[Item]) {
        let last: BTreeMap<i32, i64> = batch.iter().map(|i| (i.partition, i.offset)).collect();
        let last: Vec<(i32, i64)> = last.into_iter().collect();
        if let Err(e) = kafka::store_offsets(&self.consumer, &self.cfg.kafka.kafka_topic, &last) {
            // The partition is gone (rebalance, poll interval exceeded): its next owner re-reads
            // these messages and finds them in consumed_events.
            tracing::warn!(error = %e, "offsets not stored");
        }
    }
}

/// Fails with the fix when the consumer's tables are missing.
async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    let missing: Vec<String> =
        sqlx::query_scalar("SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL")
            .bind(["consumed_events", "leaderboard_games", "leaderboard_players"])
            .fetch_all(pool)
            .await
            .context("checking the schema")?;
    if !missing.is_empty() {
        bail!(
            "table(s) {} missing in the DATABASE_URL database: run `consumer migrate` first",
            missing.join(", ")
        );
    }
    Ok(())
}
