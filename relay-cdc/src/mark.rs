//! Writing delivery results back to `outbox_events`, batched: one UPDATE by id list for many
//! delivered rows, so marking costs a fraction of a round trip per event.
//!
//! The marker runs as its own task: while one UPDATE commits, the relay keeps streaming and
//! producing, and the next batch grows. Database errors are retried with backoff, never
//! skipped: a row that Kafka has is marked `sent` eventually, or the slot is not confirmed past
//! it and the server resends it after a restart.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ack::TxnId;

/// Work for the marker.
#[derive(Debug)]
pub enum MarkRequest {
    /// Rows Kafka has acknowledged; `txns[i]` is the transaction of `ids[i]`.
    Sent { ids: Vec<Uuid>, txns: Vec<TxnId> },
    /// A row that can never be published as it is (or is parked behind one that can't).
    /// With an aggregate, that aggregate is parked: its later events wait behind this one.
    Failed {
        id: Uuid,
        aggregate_id: Option<String>,
        error: String,
        txn: Option<TxnId>,
    },
    /// A logical-message event that must be parked: it has no row, so one is written as
    /// `failed` for `republish` to find.
    ParkMessage {
        envelope: Box<outbox::Envelope>,
        error: String,
        txn: TxnId,
    },
}

/// What the marker has committed: the transactions whose events it finished.
#[derive(Debug)]
pub struct MarkDone {
    pub txns: Vec<TxnId>,
    pub rows: usize,
    /// Aggregates whose park is now committed in `outbox_parked_aggregates`.
    pub parked: Vec<String>,
}

/// Runs until the request channel closes; answers on `done` after each commit.
pub async fn run(
    pool: PgPool,
    mut requests: mpsc::Receiver<MarkRequest>,
    done: mpsc::UnboundedSender<MarkDone>,
) {
    while let Some(first) = requests.recv().await {
        // Coalesce whatever else is already waiting into the same statement.
        let mut ids = Vec::new();
        let mut txns = Vec::new();
        let mut others = Vec::new();
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                MarkRequest::Sent { ids: i, txns: t } => {
                    ids.extend(i);
                    txns.extend(t);
                }
                other => others.push(other),
            }
            if ids.len() < 50_000 {
                next = requests.try_recv().ok();
            }
        }
        if !ids.is_empty() {
            retry("marking rows sent", || mark_sent(&pool, &ids)).await;
        }
        let mut parked = Vec::new();
        for req in others {
            match req {
                MarkRequest::Failed {
                    id,
                    aggregate_id,
                    error,
                    txn,
                } => {
                    retry("marking a row failed", || {
                        mark_failed(&pool, id, aggregate_id.as_deref(), &error)
                    })
                    .await;
                    txns.extend(txn);
                    parked.extend(aggregate_id);
                }
                MarkRequest::ParkMessage { envelope, error, txn } => {
                    retry("parking a message event", || {
                        park_message(&pool, &envelope, &error)
                    })
                    .await;
                    txns.push(txn);
                    parked.push(envelope.aggregate_id);
                }
                MarkRequest::Sent { .. } => unreachable!("collected above"),
            }
        }
        if done
            .send(MarkDone {
                txns,
                rows: ids.len(),
                parked,
            })
            .is_err()
        {
            return;
        }
    }
}

async fn retry<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<()>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How long a streamed row may take to become visible before the relay gives up on it.
const VISIBILITY_WAIT: Duration = Duration::from_secs(10);

/// Marks rows `sent`, in one UPDATE when all goes well.
///
/// The server streams a transaction once its commit record is flushed, a moment before the
/// transaction is visible to other sessions: an UPDATE in that moment matches nothing. So rows
/// neither updated nor already `sent` are retried (1 ms, doubling) until they are visible; one
/// still missing after [`VISIBILITY_WAIT`] (deleted meanwhile) is given up with a warning.
pub async fn mark_sent(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    let mut pending: Vec<Uuid> = ids.to_vec();
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let marked: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE outbox_events
                SET status = 'sent', published_at = now(), publish_attempts = publish_attempts + 1, last_error = NULL
              WHERE id = ANY($1) AND status <> 'sent'
          RETURNING id",
        )
        .bind(&pending)
        .fetch_all(pool)
        .await?;
        if marked.len() == pending.len() {
            return Ok(());
        }
        let marked: HashSet<Uuid> = marked.into_iter().collect();
        pending.retain(|id| !marked.contains(id));
        let already: HashSet<Uuid> =
            sqlx::query_scalar("SELECT id FROM outbox_events WHERE id = ANY($1) AND status = 'sent'")
                .bind(&pending)
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect();
        pending.retain(|id| !already.contains(id));
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() > VISIBILITY_WAIT {
            tracing::warn!(rows = pending.len(), first = %pending[0], "rows Kafka has were not found to mark sent (deleted?); giving up on them");
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Marks a row `failed` (and parks its aggregate), waiting for the row to be visible like
/// [`mark_sent`].
pub async fn mark_failed(
    pool: &PgPool,
    id: Uuid,
    aggregate_id: Option<&str>,
    error: &str,
) -> sqlx::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let mut tx = pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE outbox_events
                SET status = 'failed', last_error = $2, publish_attempts = publish_attempts + 1
              WHERE id = $1 AND status <> 'sent'",
        )
        .bind(id)
        .bind(error)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let visible = updated == 1
            || sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM outbox_events WHERE id = $1)")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if visible || started.elapsed() > VISIBILITY_WAIT {
            if let Some(aggregate_id) = aggregate_id {
                park(&mut tx, aggregate_id, id, error).await?;
            }
            return tx.commit().await;
        }
        tx.rollback().await?;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

async fn park(tx: &mut sqlx::PgConnection, aggregate_id: &str, id: Uuid, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbox_parked_aggregates (aggregate_id, first_failed_id, reason)
         VALUES ($1, $2, $3) ON CONFLICT (aggregate_id) DO NOTHING",
    )
    .bind(aggregate_id)
    .bind(id)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

async fn park_message(pool: &PgPool, e: &outbox::Envelope, error: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO outbox_events
            (id, event_type, aggregate_type, aggregate_id, payload, created_at, idempotency_key, status, last_error, publish_attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'failed', $8, 1)
         ON CONFLICT DO NOTHING",
    )
    .bind(e.id)
    .bind(&e.event_type)
    .bind(&e.aggregate_type)
    .bind(&e.aggregate_id)
    .bind(&e.payload)
    .bind(e.created_at)
    .bind(&e.idempotency_key)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    park(&mut tx, &e.aggregate_id, e.id, error).await?;
    tx.commit().await
}
