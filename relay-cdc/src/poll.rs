//! The polling fallback, `relay-cdc run --source poll`, for databases where logical replication
//! is not allowed (managed services without REPLICATION): the seed's `new -> processing -> sent`,
//! with the CDC relay's producer, envelope, headers, routing, parking and metrics.
//!
//! One leader polls: it takes the CDC relay's advisory lock for the same slot name, so a CDC
//! relay and a poller never both publish one outbox. A round claims up to `--poll-batch` rows in
//! `seq` order, produces them, waits for every acknowledgement and marks them `sent` in one
//! UPDATE; only then does it claim again. So a poller holds one batch at a time and never
//! reclaims its own rows, and an aggregate's events reach the producer in `seq` order (same key,
//! same partition, idempotent producer: Kafka keeps that order).
//!
//! A poller that dies leaves its batch `processing`. Those rows are reclaimed once their claim
//! (`processing_since`) is older than `--poll-stale-secs`; until then the later events of their
//! aggregates wait behind them, so per-aggregate order survives a crash. A live poller whose
//! batch takes long (Kafka down) refreshes its claim, so only a dead poller's rows go stale.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use outbox::http::Readiness;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::checks::{self, CheckError};
use crate::event::OutboxRow;
use crate::mark;
use crate::metrics::Metrics;
use crate::producer::{self, Delivery, EventProducer, ProducerConfig, SendError, Token};
use crate::relay::{self, Backoff, Terms};

/// The poll mode's own index: the claim scans unsent rows in `seq` order through it.
pub const POLL_INDEX: &str = "outbox_events_poll_idx";

/// How the poller creates [`POLL_INDEX`] (outside a transaction, without blocking writers).
pub const POLL_INDEX_DDL: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_events_poll_idx \
     ON outbox_events (seq) WHERE status IN ('new', 'processing')";

/// A SIGTERM waits this long for the batch in flight before handing it back.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything `relay-cdc run --source poll` is configured with.
/// No `Debug`: the database URL holds a password.
#[derive(Clone)]
pub struct PollConfig {
    pub database_url: String,
    /// Names the leader lock, shared with a CDC relay of the same slot name.
    pub slot: String,
    pub producer: ProducerConfig,
    /// Rows claimed per round.
    pub batch: usize,
    /// Pause after a round that found nothing to claim.
    pub interval: Duration,
    /// A `processing` row claimed longer ago than this belongs to a dead poller.
    pub stale: Duration,
}

/// Runs until `shutdown` turns true: checks, the index, then polls whenever this instance holds
/// the lock.
pub async fn run(
    cfg: PollConfig,
    metrics: Metrics,
    ready: Readiness,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pool = checks::connect(&cfg.database_url, 4).await?;
    checks::run_poll(&pool).await?;
    ensure_index(&pool).await?;
    warn_if_slot(&pool, &cfg.slot).await?;
    tokio::spawn(relay::sample_rows_not_sent(pool.clone(), metrics.clone()));
    let terms = Terms {
        database_url: &cfg.database_url,
        slot: &cfg.slot,
        metrics: &metrics,
        ready: &ready,
        // The term's own drain (DRAIN_TIMEOUT) hands its batch back first.
        drain_timeout: DRAIN_TIMEOUT + Duration::from_secs(5),
    };
    // What a term claimed but did not finish: shared with the after-term hook, which hands it
    // back to `new` at once (a lost lock drops the term mid-batch) instead of waiting
    // --poll-stale-secs.
    let held = tokio::sync::Mutex::new(Held::default());
    terms
        .run(
            shutdown,
            "poller stopped; polling again",
            |shutdown| async {
                let mut held = held.lock().await;
                *held = Held::default();
                lead(&cfg, &pool, &metrics, &ready, shutdown, &mut held).await
            },
            async || held.lock().await.release(&pool).await,
        )
        .await
}

/// Makes sure [`POLL_INDEX`] exists and is valid. Without it every claim would scan the table.
/// An invalid one (a build interrupted by a crash) is dropped and built again.
async fn ensure_index(pool: &PgPool) -> Result<(), CheckError> {
    let valid: Option<bool> =
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
            .bind(POLL_INDEX)
            .fetch_optional(pool)
            .await?;
    let cost = "marking rows sent is a non-HOT update while it exists (its predicate covers status)";
    match valid {
        Some(true) => {
            tracing::info!(index = POLL_INDEX, "poll index exists; {cost}");
            return Ok(());
        }
        Some(false) => {
            tracing::warn!(
                index = POLL_INDEX,
                "poll index is invalid (an interrupted build); building it again"
            );
            sqlx::raw_sql("DROP INDEX CONCURRENTLY IF EXISTS outbox_events_poll_idx")
                .execute(pool)
                .await
                .map_err(|e| CheckError::PollIndex {
                    error: db_message(&e),
                })?;
        }
        None => {}
    }
    tracing::info!(
        index = POLL_INDEX,
        "creating the poll index concurrently (waits for transactions running on outbox_events)"
    );
    let started = Instant::now();
    sqlx::raw_sql(POLL_INDEX_DDL)
        .execute(pool)
        .await
        .map_err(|e| CheckError::PollIndex {
            error: db_message(&e),
        })?;
    tracing::info!(
        index = POLL_INDEX,
        took_ms = started.elapsed().as_millis() as u64,
        "poll index created; {cost}"
    );
    Ok(())
}

/// An idle CDC slot of this name, left from before the switch to polling, pins WAL while nothing
/// reads it: say so (dropping it is the operator's call).
async fn warn_if_slot(pool: &PgPool, slot: &str) -> Result<(), CheckError> {
    let active: Option<bool> =
        sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(pool)
            .await?;
    // An active slot has a CDC relay streaming it: this poller stands by behind its lock.
    if active == Some(false) {
        tracing::warn!(
            slot,
            "replication slot {slot} exists and pins WAL while only a poller runs: \
             `relay-cdc slot drop --slot-name {slot}` if you no longer use the CDC source"
        );
    }
    Ok(())
}

fn db_message(e: &sqlx::Error) -> String {
    e.as_database_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The batch a term holds: claimed rows not yet finished. Kept outside the term's future, so a
/// term ended by an error or a lost lock hands its rows back at once.
#[derive(Default)]
struct Held {
    ids: Vec<Uuid>,
    /// Rows Kafka acknowledged that are not marked `sent` yet.
    acked: Vec<Uuid>,
    /// The `processing_since` the claim (or the last heartbeat) wrote: heartbeats and releases
    /// touch only rows still carrying it, never another poller's later claim.
    since: Option<DateTime<Utc>>,
}

impl Held {
    fn clear(&mut self) {
        self.ids.clear();
        self.acked.clear();
        self.since = None;
    }

    /// Marks what Kafka has and puts the rest back to `new` (best effort: if PostgreSQL is
    /// unreachable the rows go stale and are reclaimed after --poll-stale-secs).
    async fn release(&mut self, pool: &PgPool) {
        let Some(since) = self.since else {
            return;
        };
        let work = async {
            if !self.acked.is_empty() {
                mark::mark_sent(pool, &self.acked).await?;
            }
            sqlx::query(
                "UPDATE outbox_events SET status = 'new', processing_since = NULL
                  WHERE id = ANY($1) AND status = 'processing' AND processing_since = $2",
            )
            .bind(&self.ids)
            .bind(since)
            .execute(pool)
            .await
        };
        match tokio::time::timeout(Duration::from_secs(5), work).await {
            Ok(Ok(r)) => tracing::info!(
                marked = self.acked.len(),
                released = r.rows_affected(),
                "handed the unfinished batch back"
            ),
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                rows = self.ids.len(),
                "could not hand the batch back; its rows are reclaimed after --poll-stale-secs"
            ),
            Err(_) => tracing::warn!(
                rows = self.ids.len(),
                "timed out handing the batch back; its rows are reclaimed after --poll-stale-secs"
            ),
        }
        self.clear();
    }
}

/// A row this poller claimed.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    row: OutboxRow,
    seq: i64,
    processing_since: DateTime<Utc>,
}

/// An event handed to the producer, awaiting its delivery report.
struct Pending {
    id: Uuid,
    aggregate_id: String,
    created_at: DateTime<Utc>,
}

/// The unsent head of the outbox, in `seq` order: which rows may be claimed now (`ids`,
/// `aggregates`), and the age of the oldest (the lag). A `processing` row with a fresh claim is
/// held by another poller (one that died, as a rule): it and every later row of its aggregate
/// are left alone. The head is a window larger than the batch so that rows held by a dead
/// poller do not hide the rows behind them.
const HEAD_SQL: &str = "
WITH head AS MATERIALIZED (
    SELECT id, aggregate_id, seq, created_at,
           status = 'processing' AND processing_since IS NOT NULL
               AND processing_since >= now() - make_interval(secs => $3) AS held
      FROM outbox_events
     WHERE status IN ('new', 'processing')
     ORDER BY seq
     LIMIT $2
), open AS MATERIALIZED (
    SELECT id, aggregate_id, seq
      FROM (SELECT id, aggregate_id, seq,
                   bool_or(held) OVER (PARTITION BY aggregate_id COLLATE \"C\" ORDER BY seq) AS blocked
              FROM head) h
     WHERE NOT blocked
     ORDER BY seq
     LIMIT $1
)
SELECT extract(epoch FROM now() - (SELECT min(created_at) FROM head))::float8,
       (SELECT count(*) FROM head),
       (SELECT count(*) FROM head WHERE held),
       coalesce((SELECT array_agg(id ORDER BY seq) FROM open), '{}'::uuid[]),
       coalesce((SELECT array_agg(aggregate_id ORDER BY seq) FROM open), '{}'::text[])";

/// Locks the candidates that are still claimable (new, or a stale claim), skipping rows another
/// transaction holds, and says whether their aggregate is parked.
const LOCK_SQL: &str = "
SELECT e.id, e.status,
       EXISTS (SELECT 1 FROM outbox_parked_aggregates p WHERE p.aggregate_id = e.aggregate_id)
  FROM outbox_events e
 WHERE e.id = ANY($1)
   AND (e.status = 'new'
        OR (e.status = 'processing'
            AND (e.processing_since IS NULL
                 OR e.processing_since < now() - make_interval(secs => $2))))
   FOR UPDATE OF e SKIP LOCKED";

/// Claims the locked rows; returns them with `seq` and the claim time.
fn claim_sql() -> String {
    format!(
        "UPDATE outbox_events SET status = 'processing', processing_since = now()
          WHERE id = ANY($1)
         RETURNING {}, seq, processing_since",
        OutboxRow::COLUMNS
    )
}

/// What one claim found.
#[derive(Default)]
struct Claimed {
    rows: Vec<ClaimedRow>,
    /// Rows failed behind their parked aggregate in the claim itself.
    parked: usize,
}

struct Poller {
    producer: EventProducer,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    metrics: Metrics,
    batch: usize,
    stale: Duration,
    /// Head window of the next claim; grows while rows held by a dead poller fill it.
    scan: usize,
    /// Age of the oldest unsent row at the last claim, and when: the lag keeps growing from
    /// there while a batch waits for Kafka.
    lag_at_claim: (f64, Instant),
    next_token: Token,
}

/// One leadership term: connect Kafka, then claim, produce, mark, until shutdown or an error.
async fn lead(
    cfg: &PollConfig,
    pool: &PgPool,
    metrics: &Metrics,
    ready: &Readiness,
    mut shutdown: watch::Receiver<bool>,
    held: &mut Held,
) -> anyhow::Result<()> {
    let (mut producer, deliveries) =
        EventProducer::new(&cfg.producer).context("creating the Kafka producer")?;
    relay::wait_for_kafka(&producer, &cfg.producer.bootstrap_servers, &mut shutdown).await?;
    if *shutdown.borrow() {
        return Ok(());
    }
    producer
        .refresh_topic_limits()
        .await
        .context("reading the topics' max.message.bytes")?;
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_parked_aggregates")
        .fetch_one(pool)
        .await?;
    if parked > 0 {
        tracing::warn!(
            count = parked,
            "aggregates parked behind failed events; run `relay-cdc republish` once the cause is fixed"
        );
    }
    let mut poller = Poller {
        producer,
        deliveries,
        metrics: metrics.clone(),
        batch: cfg.batch,
        stale: cfg.stale,
        scan: cfg.batch * 2,
        lag_at_claim: (0.0, Instant::now()),
        next_token: 0,
    };
    tracing::info!(
        slot = %cfg.slot,
        batch = cfg.batch,
        interval_ms = cfg.interval.as_millis() as u64,
        stale_secs = cfg.stale.as_secs_f64(),
        "polling outbox_events"
    );
    ready.set(true);
    let mut stopping = false;
    let mut last_limits = Instant::now();
    let mut last_log = Instant::now();
    let mut published_at_log = metrics.published.get();
    loop {
        if stopping || *shutdown.borrow() {
            tracing::info!("drained: every claimed row finished; stopping");
            return Ok(());
        }
        if last_limits.elapsed() >= Duration::from_secs(30) {
            // An operator may raise a topic's limit; new events then pass.
            if let Err(e) = poller.producer.refresh_topic_limits().await {
                tracing::warn!(error = %e, "could not refresh topic size limits");
            }
            last_limits = Instant::now();
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            let published = metrics.published.get();
            if published != published_at_log {
                tracing::info!(published = published - published_at_log, "progress");
            }
            published_at_log = published;
            last_log = Instant::now();
        }
        let claimed = poller.claim(pool).await?;
        if claimed.rows.is_empty() {
            if claimed.parked == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.interval) => {}
                    _ = shutdown.changed() => stopping = true,
                }
            }
            continue;
        }
        poller
            .publish(pool, claimed.rows, held, &mut shutdown, &mut stopping)
            .await?;
    }
}

impl Poller {
    /// Claims the next batch in one transaction: rows that are `new` or claimed by a dead
    /// poller, in `seq` order, none behind a row of its aggregate that someone else still
    /// holds. Rows of parked aggregates are failed behind their aggregate instead.
    async fn claim(&mut self, pool: &PgPool) -> anyhow::Result<Claimed> {
        let stale = self.stale.as_secs_f64();
        let (oldest_age, head_len, held_rows, ids, aggregates): (
            Option<f64>,
            i64,
            i64,
            Vec<Uuid>,
            Vec<String>,
        ) = sqlx::query_as(HEAD_SQL)
            .bind(self.batch as i64)
            .bind(self.scan as i64)
            .bind(stale)
            .fetch_one(pool)
            .await
            .context("reading the outbox head")?;
        self.lag_at_claim = (oldest_age.unwrap_or(0.0).max(0.0), Instant::now());
        self.metrics.lag_seconds.set(self.lag_at_claim.0);
        self.scan = if held_rows == 0 {
            self.batch * 2
        } else if ids.len() < self.batch && head_len as usize >= self.scan {
            tracing::debug!(
                held_rows,
                scan = self.scan,
                "rows held by another poller fill the head; looking further"
            );
            (self.scan * 2).min(self.batch * 64)
        } else {
            self.scan
        };
        if ids.is_empty() {
            return Ok(Claimed::default());
        }

        let mut tx = pool.begin().await?;
        let locked: Vec<(Uuid, String, bool)> = sqlx::query_as(LOCK_SQL)
            .bind(&ids)
            .bind(stale)
            .fetch_all(&mut *tx)
            .await
            .context("locking the claim")?;
        let locked: HashMap<Uuid, (String, bool)> = locked
            .into_iter()
            .map(|(id, status, parked)| (id, (status, parked)))
            .collect();
        // A candidate that could not be locked is being claimed or finished by someone else
        // right now: its aggregate waits for the next round, so nothing overtakes it.
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut claim = Vec::new();
        let mut behind: Vec<(Uuid, &str)> = Vec::new();
        let mut reclaimed = Vec::new();
        for (id, aggregate) in ids.iter().zip(&aggregates) {
            if blocked.contains(aggregate.as_str()) {
                continue;
            }
            match locked.get(id) {
                None => {
                    blocked.insert(aggregate);
                }
                Some((_, true)) => behind.push((*id, aggregate)),
                Some((status, false)) => {
                    if status == "processing" {
                        reclaimed.push(*id);
                    }
                    claim.push(*id);
                }
            }
        }
        if !behind.is_empty() {
            let ids: Vec<Uuid> = behind.iter().map(|(id, _)| *id).collect();
            sqlx::query(
                "UPDATE outbox_events
                    SET status = 'failed', publish_attempts = publish_attempts + 1,
                        last_error = 'parked: an earlier event of aggregate ' || aggregate_id || ' failed to publish',
                        processing_since = NULL
                  WHERE id = ANY($1)",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .context("failing events of parked aggregates")?;
        }
        let mut rows: Vec<ClaimedRow> = if claim.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(&claim_sql())
                .bind(&claim)
                .fetch_all(&mut *tx)
                .await
                .context("claiming rows")?
        };
        tx.commit().await?;
        rows.sort_by_key(|r| r.seq);

        for (id, aggregate) in &behind {
            self.metrics.publish_errors.with_label_values(&["parked"]).inc();
            tracing::warn!(event_id = %id, aggregate_id = aggregate, "parked: an earlier event of aggregate {aggregate} failed to publish");
        }
        if !reclaimed.is_empty() {
            tracing::warn!(
                event_ids = ?&reclaimed[..reclaimed.len().min(10)],
                "reclaimed {} rows a dead poller left in processing",
                reclaimed.len()
            );
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            tracing::debug!(
                rows = rows.len(),
                first_seq = first.seq,
                last_seq = last.seq,
                "claimed"
            );
        }
        Ok(Claimed {
            rows,
            parked: behind.len(),
        })
    }

    /// Produces a claimed batch in `seq` order, waits for every acknowledgement, and marks the
    /// delivered rows `sent` in one UPDATE. A permanent failure marks its row `failed` and parks
    /// the aggregate; the aggregate's later rows in the batch are failed behind it.
    async fn publish(
        &mut self,
        pool: &PgPool,
        rows: Vec<ClaimedRow>,
        held: &mut Held,
        shutdown: &mut watch::Receiver<bool>,
        stopping: &mut bool,
    ) -> anyhow::Result<()> {
        held.clear();
        held.ids = rows.iter().map(|r| r.row.id).collect();
        held.since = rows.first().map(|r| r.processing_since);
        let mut parked: HashSet<String> = HashSet::new();
        let mut pending: HashMap<Token, Pending> = HashMap::with_capacity(rows.len());
        for row in rows {
            let envelope = row.row.into_envelope();
            if parked.contains(&envelope.aggregate_id) {
                let reason = format!(
                    "parked: an earlier event of aggregate {} failed to publish",
                    envelope.aggregate_id
                );
                self.fail(pool, &envelope.aggregate_id, envelope.id, "parked", reason)
                    .await?;
                continue;
            }
            let value = envelope.to_json();
            loop {
                let token = self.next_token;
                match self.producer.send(token, &envelope, &value) {
                    Ok(()) => {
                        self.next_token += 1;
                        tracing::trace!(event_id = %envelope.id, aggregate_id = %envelope.aggregate_id, "produced");
                        pending.insert(
                            token,
                            Pending {
                                id: envelope.id,
                                aggregate_id: envelope.aggregate_id.clone(),
                                created_at: envelope.created_at,
                            },
                        );
                        break;
                    }
                    Err(SendError::QueueFull) => {
                        // Deliveries make room; order holds because this event is sent next.
                        let d = self.deliveries.recv().await.context("the producer stopped")?;
                        self.on_delivery(pool, d, &mut pending, &mut parked, held).await?;
                    }
                    Err(SendError::Permanent(e)) => {
                        tracing::error!(event_id = %envelope.id, aggregate_id = %envelope.aggregate_id, error = %e, "event failed permanently; parking its aggregate");
                        parked.insert(envelope.aggregate_id.clone());
                        self.fail(
                            pool,
                            &envelope.aggregate_id,
                            envelope.id,
                            relay::error_kind(&e),
                            format!("Kafka refused the event: {e}"),
                        )
                        .await?;
                        break;
                    }
                }
            }
            self.metrics.in_flight.set(pending.len() as i64);
        }

        // Every acknowledgement, refreshing the claim if that takes long (Kafka down) so that
        // the rows never look abandoned.
        let beat = (self.stale / 3).max(Duration::from_secs(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        let mut lag_tick = tokio::time::interval(Duration::from_secs(1));
        let mut deadline = stopping.then(|| tokio::time::Instant::now() + DRAIN_TIMEOUT);
        while !pending.is_empty() {
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                d = self.deliveries.recv() => {
                    let d = d.context("the producer stopped")?;
                    self.on_delivery(pool, d, &mut pending, &mut parked, held).await?;
                    self.metrics.in_flight.set(pending.len() as i64);
                }
                _ = heartbeat.tick() => self.heartbeat(pool, held).await,
                _ = lag_tick.tick() => {
                    let (age, at) = self.lag_at_claim;
                    self.metrics.lag_seconds.set(age + at.elapsed().as_secs_f64());
                }
                _ = shutdown.changed(), if !*stopping => {
                    *stopping = true;
                    deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    tracing::info!(in_flight = pending.len(), "shutting down: draining the batch in flight");
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    tracing::warn!(in_flight = pending.len(), "drain timed out; handing the batch back");
                    return Ok(());
                }
            }
        }
        self.metrics.in_flight.set(0);

        // One UPDATE for the batch; retried, since Kafka already has these rows.
        let mut backoff = Backoff::default();
        while !held.acked.is_empty() {
            match mark::mark_sent(pool, &held.acked).await {
                Ok(()) => {
                    self.metrics.marked.inc_by(held.acked.len() as u64);
                    tracing::trace!(rows = held.acked.len(), "marked sent");
                    break;
                }
                Err(e) => {
                    outbox::warn_throttled!(Duration::from_secs(5), error = %e, rows = held.acked.len(), "marking rows sent failed; retrying");
                    if *stopping && deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(());
                    }
                    backoff.wait(shutdown).await;
                    if !*stopping && *shutdown.borrow() {
                        *stopping = true;
                        deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    }
                }
            }
        }
        held.clear();
        Ok(())
    }

    async fn on_delivery(
        &mut self,
        pool: &PgPool,
        d: Delivery,
        pending: &mut HashMap<Token, Pending>,
        parked: &mut HashSet<String>,
        held: &mut Held,
    ) -> anyhow::Result<()> {
        let p = pending
            .remove(&d.token)
            .context("delivery report for an unknown event")?;
        match d.result {
            Ok((partition, offset)) => {
                self.metrics.published.inc();
                let age = (Utc::now() - p.created_at).num_microseconds().unwrap_or(0);
                self.metrics.commit_to_ack.observe(age.max(0) as f64 / 1e6);
                tracing::trace!(event_id = %p.id, partition, offset, "acknowledged");
                held.acked.push(p.id);
                Ok(())
            }
            Err(e) if producer::is_permanent(&e) => {
                // Later events of this aggregate in the batch may already be on their way:
                // the park holds back the ones not produced yet.
                tracing::error!(event_id = %p.id, aggregate_id = %p.aggregate_id, error = %e, "Kafka rejected the event; parking its aggregate");
                parked.insert(p.aggregate_id.clone());
                self.fail(
                    pool,
                    &p.aggregate_id,
                    p.id,
                    relay::error_kind(&e),
                    format!("Kafka rejected the event: {e}"),
                )
                .await
            }
            // Not acknowledged: hand the batch back and claim it again, in order.
            Err(e) => bail!("Kafka delivery of event {} failed ({e})", p.id),
        }
    }

    /// Marks a row `failed` and parks its aggregate (one transaction, retried briefly).
    async fn fail(
        &self,
        pool: &PgPool,
        aggregate_id: &str,
        id: Uuid,
        kind: &str,
        reason: String,
    ) -> anyhow::Result<()> {
        self.metrics.publish_errors.with_label_values(&[kind]).inc();
        if kind == "parked" {
            outbox::warn_throttled!(Duration::from_secs(1), event_id = %id, aggregate_id, "{reason}");
        }
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match mark::mark_failed(pool, id, Some(aggregate_id), &reason).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 5 => {
                    outbox::warn_throttled!(Duration::from_secs(5), event_id = %id, error = %e, "marking a row failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e).with_context(|| format!("marking event {id} failed")),
            }
        }
    }

    /// Refreshes the claim of the batch in flight.
    async fn heartbeat(&self, pool: &PgPool, held: &mut Held) {
        let Some(since) = held.since else {
            return;
        };
        let refreshed: Result<Option<DateTime<Utc>>, _> = sqlx::query_scalar(
            "WITH r AS (
                UPDATE outbox_events SET processing_since = now()
                 WHERE id = ANY($1) AND status = 'processing' AND processing_since = $2
                RETURNING processing_since)
             SELECT max(processing_since) FROM r",
        )
        .bind(&held.ids)
        .bind(since)
        .fetch_one(pool)
        .await;
        match refreshed {
            Ok(Some(t)) => {
                tracing::debug!(rows = held.ids.len(), "batch still in flight; claim refreshed");
                held.since = Some(t);
            }
            Ok(None) => {}
            Err(e) => {
                outbox::warn_throttled!(Duration::from_secs(5), error = %e, "could not refresh the batch's claim")
            }
        }
    }
}
