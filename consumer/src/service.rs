//! `consumer run`: collect a batch, apply it in one transaction, store its offsets, repeat.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use outbox::http::Readiness;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
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
            .max_connections(cfg.apply_concurrency + 1)
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

    /// Runs until `signal` completes. The batches in hand are then finished (or, when the
    /// database is down, abandoned uncommitted), the stored offsets are committed and the consumer
    /// leaves its group.
    ///
    /// Collecting the next batch overlaps with applying the current one: the database is the
    /// bottleneck, and decoding costs it nothing that way.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) {
        let shutdown = Shutdown::new(signal);
        let log = tokio::spawn(metrics::log_periodically(
            self.metrics.clone(),
            self.cfg.metrics_log_interval(),
        ));
        let (tx, mut rx) = mpsc::channel::<Vec<Item>>(1);
        let collect = async {
            let tx = tx;
            while let Some(batch) = self.next_batch(&shutdown).await {
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    break;
                }
                if shutdown.requested() {
                    break;
                }
            }
        };
        let apply = async {
            while let Some(batch) = rx.recv().await {
                if !self.apply(batch, &shutdown).await {
                    break;
                }
            }
            // Closing the channel stops the collector if it is still running.
            drop(rx);
        };
        tokio::join!(collect, apply);
        kafka::commit_stored(&self.consumer, "shutdown");
        log.abort();
        self.http.abort();
        tracing::info!("{}", self.metrics.summary_line());
        // Closing leaves the group (after committing, via the revocation callback).
        drop(self.consumer);
        tracing::info!("consumer stopped");
    }

    /// Applies a batch as up to `apply_concurrency` transactions over disjoint sets of
    /// partitions, each storing its offsets once committed. False when shutdown interrupted it.
    async fn apply(&self, batch: Vec<Item>, shutdown: &Shutdown) -> bool {
        let groups = split_by_partition(batch, self.cfg.apply_concurrency as usize);
        let done = futures::future::join_all(groups.iter().map(|group| async move {
            let span = tracing::info_span!("batch", messages = group.len());
            let outcome = self.applier.apply(group, shutdown).instrument(span).await?;
            self.store_offsets(group);
            self.metrics
                .record(&outcome, group.iter().map(|i| i.received.elapsed()));
            tracing::debug!(?outcome, "batch committed");
            Some(())
        }))
        .await;
        done.iter().all(Option::is_some)
    }

    /// The next batch: waits for a first message, then takes what arrives within the linger
    /// time, up to the batch size. `None` once shutdown is requested with nothing in hand.
    async fn next_batch(&self, shutdown: &Shutdown) -> Option<Vec<Item>> {
        let mut stream = self.consumer.stream();
        let mut batch = Vec::new();
        loop {
            let m = tokio::select! {
                biased;
                () = shutdown.wait() => return None,
                m = stream.next() => m,
            };
            match m {
                Some(Ok(m)) => {
                    self.push(&mut batch, &m);
                    break;
                }
                Some(Err(e)) => {
                    outbox::warn_throttled!(Duration::from_secs(5), error = %e, "Kafka consumer error");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.wait() => return None,
                    }
                }
                None => return None,
            }
        }
        let linger = tokio::time::sleep(self.cfg.batch_linger());
        tokio::pin!(linger);
        while batch.len() < self.cfg.batch_size as usize && !shutdown.requested() {
            tokio::select! {
                biased;
                m = stream.next() => match m {
                    Some(Ok(m)) => self.push(&mut batch, &m),
                    Some(Err(e)) => {
                        outbox::warn_throttled!(Duration::from_secs(5), error = %e, "Kafka consumer error");
                        break;
                    }
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        drop(stream);
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
            outbox::warn_throttled!(Duration::from_secs(5), error = %e, "offsets not stored");
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

/// Splits a batch into at most `n` groups of whole partitions, balanced by message count; the
/// order of each partition's messages is kept.
fn split_by_partition(batch: Vec<Item>, n: usize) -> Vec<Vec<Item>> {
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    for i in &batch {
        *counts.entry(i.partition).or_default() += 1;
    }
    let mut by_size: Vec<(i32, usize)> = counts.into_iter().collect();
    by_size.sort_by_key(|(p, c)| (std::cmp::Reverse(*c), *p));
    let mut load = vec![0; n.max(1)];
    let mut group_of = BTreeMap::new();
    for (p, c) in by_size {
        let g = (0..load.len()).min_by_key(|g| load[*g]).unwrap_or(0);
        load[g] += c;
        group_of.insert(p, g);
    }
    let mut groups: Vec<Vec<Item>> = load.iter().map(|_| Vec::new()).collect();
    for i in batch {
        groups[group_of[&i.partition]].push(i);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::plan;

    fn item(partition: i32, offset: i64) -> Item {
        Item {
            partition,
            offset,
            key: None,
            value: None,
            headers: None,
            received: std::time::Instant::now(),
            plan: plan("t", partition, offset, None),
        }
    }

    fn layout(groups: &[Vec<Item>]) -> Vec<Vec<(i32, i64)>> {
        groups
            .iter()
            .map(|g| g.iter().map(|i| (i.partition, i.offset)).collect())
            .collect()
    }

    #[test]
    fn split_keeps_partitions_whole_and_in_order_and_balances_them() {
        // Partition 0 has 3 messages, 1 has 2, 2 has 2: {0} and {1, 2}.
        let batch = vec![
            item(1, 5),
            item(0, 1),
            item(2, 7),
            item(0, 2),
            item(1, 6),
            item(2, 8),
            item(0, 3),
        ];
        assert_eq!(
            layout(&split_by_partition(batch, 2)),
            [vec![(0, 1), (0, 2), (0, 3)], vec![(1, 5), (2, 7), (1, 6), (2, 8)]]
        );
        let one = split_by_partition(vec![item(3, 1), item(4, 1), item(3, 2)], 1);
        assert_eq!(layout(&one), [vec![(3, 1), (4, 1), (3, 2)]]);
        let few = split_by_partition(vec![item(3, 1), item(3, 2)], 4);
        assert_eq!(layout(&few), [vec![(3, 1), (3, 2)]]);
    }
}
