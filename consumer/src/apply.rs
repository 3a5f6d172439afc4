//! Applying a batch: one database transaction records every message in consumed_events
//! (`ON CONFLICT DO NOTHING`, so a second delivery of an event finds its row) and writes the
//! effects of the events that are new; the caller stores the offsets only after the commit.
//!
//! The fast path does the whole batch with a constant number of statements. When the database
//! rejects an event's data, the batch is redone one event at a time under savepoints, which
//! finds the event, retries it up to `max_attempts` times and dead-letters it, in delivery order.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox::http::Readiness;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::dlq::{DeadLetters, Failure};
use crate::handlers::{self, Effect, FinishedGame};
use crate::message::{Item, Plan};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// What a committed batch did, by message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub ok: u64,
    pub skipped: u64,
    pub duplicate: u64,
    pub dlq: u64,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Self) {
        self.ok += o.ok;
        self.skipped += o.skipped;
        self.duplicate += o.duplicate;
        self.dlq += o.dlq;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database is unreachable or unusable: the batch is retried, never skipped.
    #[error("database unavailable: {0}")]
    Database(#[source] sqlx::Error),
    /// The database rejected an event's data: one failed attempt of that event.
    #[error("the database rejected the event: {0}")]
    Rejected(#[source] sqlx::Error),
    /// A dead letter could not be written: the batch is retried, never skipped.
    #[error("writing to the dead-letter topic failed: {0}")]
    DeadLetter(#[source] rdkafka::error::KafkaError),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        if rejected_by_data(&e) {
            ApplyError::Rejected(e)
        } else {
            ApplyError::Database(e)
        }
    }
}

/// Only data exceptions (SQLSTATE class 22) and integrity violations (23) can be an event's
/// fault. Everything else (lost connection, deadlock, missing table, full disk) is the
/// environment's and must not send events to the DLQ.
fn rejected_by_data(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

pub struct Applier {
    pub(crate) pool: PgPool,
    pub(crate) topic: String,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) max_attempts: u32,
    pub(crate) metrics: Metrics,
    pub(crate) ready: Readiness,
}

/// Dead letters already acknowledged by Kafka during this batch, by (partition, offset), so a
/// batch retried after a rollback does not send them twice.
type Sent = HashSet<(i32, i64)>;

impl Applier {
    /// Applies the batch, retrying transient failures with backoff until it commits. Returns
    /// `None` when shutdown is requested while waiting to retry: nothing of the batch is
    /// committed, and it is read again from the committed offsets.
    pub async fn apply(&self, items: &[Item], shutdown: &Shutdown) -> Option<Outcome> {
        let mut sent = Sent::new();
        let mut wait = RETRY_FIRST;
        loop {
            let mut result = self.attempt(items, &mut sent, false).await;
            if let Err(ApplyError::Rejected(e)) = &result {
                tracing::info!(error = %e, "an event was rejected; applying the batch one event at a time");
                result = self.attempt(items, &mut sent, true).await;
            }
            match result {
                Ok(outcome) => {
                    self.ready.set(true);
                    return Some(outcome);
                }
                Err(e) => {
                    self.ready.set(false);
                    self.metrics.add_retried(items.len() as u64);
                    outbox::warn_throttled!(Duration::from_secs(5), error = %e, retry_in = ?wait, "batch rolled back, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.wait() => {
                            tracing::info!("shutdown while retrying: the batch is left for the next start");
                            return None;
                        }
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn attempt(
        &self,
        items: &[Item],
        sent: &mut Sent,
        one_by_one: bool,
    ) -> Result<Outcome, ApplyError> {
        let mut tx = self.pool.begin().await?;
        let outcome = if one_by_one {
            self.one_by_one(&mut tx, items, sent).await?
        } else {
            self.all_at_once(&mut tx, items, sent).await?
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn all_at_once(
        &self,
        conn: &mut PgConnection,
        items: &[Item],
        sent: &mut Sent,
    ) -> Result<Outcome, ApplyError> {
        let mut o = Outcome::default();
        // Later deliveries of an id in the same batch are duplicates of the first.
        let mut seen = HashSet::with_capacity(items.len());
        let mut dead = Rows::default();
        let mut dead_items = Vec::new();
        let mut live = Rows::default();
        let mut live_items = Vec::new();
        for it in items {
            if !seen.insert(it.plan.event_id()) {
                o.duplicate += 1;
                continue;
            }
            match &it.plan {
                Plan::Apply { envelope, effect } => {
                    let result = if matches!(effect, Effect::Skip) {
                        "skipped"
                    } else {
                        "ok"
                    };
                    live.push(
                        it,
                        envelope.id,
                        &envelope.event_type,
                        Some(envelope.created_at),
                        result,
                        None,
                    );
                    live_items.push((it, envelope, effect));
                }
                Plan::Dead {
                    id,
                    event_type,
                    created_at,
                    error,
                } => {
                    let error = error.to_string();
                    dead.push(it, *id, event_type, *created_at, "dlq", Some(&error));
                    dead_items.push((it, *id, error));
                }
            }
        }

        // Undecodable messages: the first delivery is dead-lettered, a later one is a duplicate.
        let new = dead.insert(conn, &self.topic, false).await?;
        for (it, id, error) in dead_items {
            if new.contains(&id) {
                let f = Failure {
                    event_id: id,
                    error: &error,
                    attempts: 1,
                };
                self.send_dead_letter(it, &f, sent).await?;
                o.dlq += 1;
            } else {
                o.duplicate += 1;
            }
        }

        let new = live.insert(conn, &self.topic, true).await?;
        let mut games = Vec::new();
        for (_, envelope, effect) in live_items {
            if !new.contains(&envelope.id) {
                o.duplicate += 1;
                continue;
            }
            match effect {
                Effect::GameFinished(game) => {
                    o.ok += 1;
                    games.push(FinishedGame {
                        event_id: envelope.id,
                        finished_at: envelope.created_at,
                        game,
                    });
                }
                Effect::Skip => o.skipped += 1,
            }
        }
        handlers::apply_games(conn, &games).await?;
        Ok(o)
    }

    async fn one_by_one(
        &self,
        conn: &mut PgConnection,
        items: &[Item],
        sent: &mut Sent,
    ) -> Result<Outcome, ApplyError> {
        let mut o = Outcome::default();
        for it in items {
            let span = tracing::info_span!("event", event_id = %it.plan.event_id(), topic = %self.topic,
                                           partition = it.partition, offset = it.offset);
            o += self.with_attempts(conn, it, sent).instrument(span).await?;
        }
        Ok(o)
    }

    /// Applies one event under a savepoint, up to `max_attempts` times, then dead-letters it.
    async fn with_attempts(
        &self,
        conn: &mut PgConnection,
        it: &Item,
        sent: &mut Sent,
    ) -> Result<Outcome, ApplyError> {
        let mut attempt = 1;
        loop {
            sqlx::query("SAVEPOINT event").execute(&mut *conn).await?;
            match self.all_at_once(conn, std::slice::from_ref(it), sent).await {
                Ok(o) => {
                    sqlx::query("RELEASE SAVEPOINT event").execute(&mut *conn).await?;
                    return Ok(o);
                }
                Err(ApplyError::Rejected(e)) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT event")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("RELEASE SAVEPOINT event").execute(&mut *conn).await?;
                    if attempt >= self.max_attempts {
                        self.dead_letter_rejected(conn, it, &e.to_string(), attempt, sent)
                            .await?;
                        return Ok(Outcome {
                            dlq: 1,
                            ..Outcome::default()
                        });
                    }
                    outbox::warn_throttled!(Duration::from_secs(1), error = %e, attempt, "event rejected by the database, retrying");
                    self.metrics.add_retried(1);
                    tokio::time::sleep(HANDLER_RETRY_FIRST * 2u32.pow(attempt.min(5) - 1)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn dead_letter_rejected(
        &self,
        conn: &mut PgConnection,
        it: &Item,
        error: &str,
        attempts: u32,
        sent: &mut Sent,
    ) -> Result<(), ApplyError> {
        let (id, event_type, created_at) = match &it.plan {
            Plan::Apply { envelope, .. } => (
                envelope.id,
                envelope.event_type.as_str(),
                Some(envelope.created_at),
            ),
            Plan::Dead {
                id,
                event_type,
                created_at,
                ..
            } => (*id, event_type.as_str(), *created_at),
        };
        let f = Failure {
            event_id: id,
            error,
            attempts,
        };
        self.send_dead_letter(it, &f, sent).await?;
        let mut row = Rows::default();
        row.push(it, id, event_type, created_at, "dlq", Some(error));
        row.insert(conn, &self.topic, true).await?;
        Ok(())
    }

    async fn send_dead_letter(&self, it: &Item, f: &Failure<'_>, sent: &mut Sent) -> Result<(), ApplyError> {
        if sent.contains(&(it.partition, it.offset)) {
            return Ok(());
        }
        self.dead_letters
            .send(it, f)
            .await
            .map_err(ApplyError::DeadLetter)?;
        sent.insert((it.partition, it.offset));
        tracing::warn!(event_id = %f.event_id, topic = %self.topic, partition = it.partition,
                       offset = it.offset, attempts = f.attempts, error = f.error, "message dead-lettered");
        Ok(())
    }
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
const HANDLER_RETRY_FIRST: Duration = Duration::from_millis(50);

/// consumed_events rows, column by column, for one UNNEST insert.
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    types: Vec<String>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    created: Vec<Option<DateTime<Utc>>>,
    results: Vec<&'static str>,
    errors: Vec<Option<String>>,
}

impl Rows {
    fn push(
        &mut self,
        it: &Item,
        id: Uuid,
        event_type: &str,
        created_at: Option<DateTime<Utc>>,
        result: &'static str,
        error: Option<&str>,
    ) {
        // A dead letter's row must be writable whatever the message held: PostgreSQL text
        // cannot store NUL.
        let text = |s: &str| {
            if result == "dlq" {
                s.replace('\0', "\u{fffd}")
            } else {
                s.to_string()
            }
        };
        self.ids.push(id);
        self.types.push(text(event_type));
        self.partitions.push(it.partition);
        self.offsets.push(it.offset);
        self.created.push(created_at);
        self.results.push(result);
        self.errors.push(error.map(text));
    }

    /// Inserts the rows and returns the ids that are new. With `replace_dlq`, a row recorded as
    /// `dlq` earlier is replaced (the event is being applied or dead-lettered again, after a
    /// redrive or a replay) and its id counts as new.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        topic: &str,
        replace_dlq: bool,
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO consumed_events AS c
                 (event_id, event_type, topic, partition, kafka_offset, created_at, result, error)
             SELECT u.id, u.ty, $3, u.p, u.o, coalesce(u.c, now()), u.r, u.err
             FROM UNNEST($1::uuid[], $2::text[], $4::int4[], $5::int8[], $6::timestamptz[], $7::text[], $8::text[])
                  AS u(id, ty, p, o, c, r, err)
             ON CONFLICT (event_id) DO UPDATE SET
                 event_type = EXCLUDED.event_type, topic = EXCLUDED.topic, partition = EXCLUDED.partition,
                 kafka_offset = EXCLUDED.kafka_offset, created_at = EXCLUDED.created_at,
                 consumed_at = EXCLUDED.consumed_at, result = EXCLUDED.result, error = EXCLUDED.error
             WHERE c.result = 'dlq' AND $9
             RETURNING event_id",
        )
        .bind(&self.ids)
        .bind(&self.types)
        .bind(topic)
        .bind(&self.partitions)
        .bind(&self.offsets)
        .bind(&self.created)
        .bind(&self.results)
        .bind(&self.errors)
        .bind(replace_dlq)
        .fetch_all(conn)
        .await?;
        Ok(ids.into_iter().collect())
    }
}
