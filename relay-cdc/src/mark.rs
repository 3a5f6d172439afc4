//! Writing delivery results back to `outbox_events`, batched: one UPDATE by id list for many
//! delivered rows, so marking costs a fraction of a round trip per event.
//!
//! The marker runs as its own task: while one UPDATE commits, the relay keeps streaming and
//! producing, and the next batch grows. Connection trouble is retried with backoff for as long as
//! it lasts (every event waits, none is skipped). A statement the server refuses is different:
//! recording a failure (a row `failed`, a parked message event) is tried [`TRIES`] times, then
//! recorded in a simpler form that cannot be refused, so one bad event never holds the slot.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use outbox::warn_throttled;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ack::TxnId;

/// How often a statement the server refuses is tried before a simpler form is recorded.
pub const TRIES: u32 = 3;

/// The longest `last_error` (or park reason) written: error texts may quote their input.
const MAX_ERROR_BYTES: usize = 2000;

/// The longest text field of a parked message event in its sanitized form; btree entries (the
/// unique idempotency key) must stay under 2704 bytes.
const MAX_FIELD_BYTES: usize = 1000;

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
            retry_while_down("marking rows sent", || mark_sent(&pool, &ids)).await;
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
                    record_failed(&pool, id, aggregate_id.as_deref(), &error).await;
                    txns.extend(txn);
                    parked.extend(aggregate_id);
                }
                MarkRequest::ParkMessage { envelope, error, txn } => {
                    record_parked_message(&pool, &envelope, &error).await;
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

/// Retries `f` until it succeeds, however long PostgreSQL is unreachable or refuses (used for
/// marking rows `sent`: Kafka has them, and the slot is not confirmed past them until marked).
async fn retry_while_down<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<()>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) => {
                warn_throttled!(Duration::from_secs(5), error = %e, retry_in = ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs `f` until it succeeds. Connection trouble is waited out (retried with backoff); a
/// statement the server refuses is tried [`TRIES`] times, then its last error is returned.
async fn settle<F, Fut>(what: &str, event_id: Uuid, mut f: F) -> Result<(), sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<()>>,
{
    let mut delay = Duration::from_millis(100);
    let mut refused = 0;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if is_transient(&e) => {
                warn_throttled!(Duration::from_secs(5), %event_id, error = %e, retry_in = ?delay, "{what}: PostgreSQL unavailable; retrying");
            }
            Err(e) => {
                refused += 1;
                if refused >= TRIES {
                    return Err(e);
                }
                warn_throttled!(Duration::from_secs(5), %event_id, error = %e, attempt = refused, "{what} was refused; trying again");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Connection trouble, server shutdown, overload, serialization conflicts: worth waiting for.
/// Anything else the server said is about the statement itself and would be said again.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| matches!(c.get(..2), Some("08" | "40" | "53" | "57" | "58")) || c == "25006"),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Text PostgreSQL can store: NULs dropped (text columns refuse them), cut to at most
/// `max_bytes` on a character boundary.
pub fn storable(s: &str, max_bytes: usize) -> String {
    let mut out: String = s.chars().filter(|&c| c != '\0').collect();
    if out.len() > max_bytes {
        let mut end = max_bytes;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// SQL for the key an aggregate is parked under, applied to the text parameter or column `expr`:
/// the aggregate id itself, or for an id too long for a btree entry a prefix and its md5.
pub fn park_key_sql(expr: &str) -> String {
    format!(
        "(CASE WHEN octet_length({expr}) > {MAX_FIELD_BYTES} THEN left({expr}, 200) || '...md5:' || md5({expr}) ELSE {expr} END)"
    )
}

/// Marks a row `failed` and parks its aggregate; when the server refuses that [`TRIES`] times,
/// marks it with the refusal as its error, and at worst gives up on the record with an error
/// line (the aggregate stays parked in this relay's memory until it restarts).
async fn record_failed(pool: &PgPool, id: Uuid, aggregate_id: Option<&str>, error: &str) {
    let what = "marking a row failed";
    let Err(refused) = settle(what, id, || mark_failed(pool, id, aggregate_id, error)).await else {
        return;
    };
    tracing::error!(event_id = %id, error = %refused, "{what} was refused {TRIES} times; recording the refusal instead");
    let note = format!("{}; recording that failed too: {refused}", storable(error, 500));
    if let Err(e) = settle(what, id, || mark_failed(pool, id, aggregate_id, &note)).await {
        tracing::error!(event_id = %id, error = %e, "could not record the failure of this event in any form; going on without it");
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
    let error = &storable(error, MAX_ERROR_BYTES);
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
    sqlx::query(&format!(
        "INSERT INTO outbox_parked_aggregates (aggregate_id, first_failed_id, reason)
         VALUES ({}, $2, $3) ON CONFLICT (aggregate_id) DO NOTHING",
        park_key_sql("$1")
    ))
    .bind(aggregate_id)
    .bind(id)
    .bind(storable(reason, MAX_ERROR_BYTES))
    .execute(tx)
    .await?;
    Ok(())
}

/// Writes a logical-message event that must be parked as a `failed` row (it has none) and parks
/// its aggregate. When the server refuses the envelope as it is ([`TRIES`] times: a payload
/// holding `\u0000`, which jsonb refuses, an idempotency key too long for its index or already
/// taken...), it is written sanitized (NULs escaped or dropped, long fields cut); if that is
/// refused too, with its payload replaced by a reference (size, head, reason) and no key. At
/// worst, one error line and the relay goes on.
async fn record_parked_message(pool: &PgPool, e: &outbox::Envelope, error: &str) {
    let what = "parking a message event";
    let error = storable(error, MAX_ERROR_BYTES);
    let Err(refused) = settle(what, e.id, || park_message(pool, e, &error)).await else {
        return;
    };
    tracing::warn!(event_id = %e.id, error = %refused, "the parked message event was refused as it is; recording it sanitized");
    let (clean, changes) = sanitized(e);
    let note = format!(
        "{error}; stored sanitized ({}) because the original was refused: {refused}",
        changes.join(", ")
    );
    let Err(refused) = settle(what, e.id, || park_message(pool, &clean, &note)).await else {
        return;
    };
    tracing::warn!(event_id = %e.id, error = %refused, "the sanitized message event was refused too; recording a reference to it");
    let reference = referenced(e, &refused.to_string());
    let note = format!("{error}; payload not stored (see payload.outbox_payload_not_stored): {refused}");
    if let Err(last) = settle(what, e.id, || park_message(pool, &reference, &note)).await {
        tracing::error!(event_id = %e.id, aggregate_id = %e.aggregate_id, error = %last,
            "could not record the parked message event in any form; its aggregate stays parked until the relay restarts");
    }
}

/// The envelope with NULs escaped in its payload (as the six characters `\u0000`), dropped from
/// its text fields, and those cut to [`MAX_FIELD_BYTES`]; with what was changed.
fn sanitized(e: &outbox::Envelope) -> (outbox::Envelope, Vec<&'static str>) {
    let mut changes = Vec::new();
    let mut payload = e.payload.clone();
    if escape_nuls(&mut payload) {
        changes.push("NUL characters in the payload escaped");
    }
    let mut field = |s: &str, name: &'static str| {
        let clean = storable(s, MAX_FIELD_BYTES);
        if clean != s {
            changes.push(name);
        }
        if clean.is_empty() { "-".to_owned() } else { clean }
    };
    let clean = outbox::Envelope {
        id: e.id,
        event_type: field(&e.event_type, "event_type cut"),
        aggregate_type: field(&e.aggregate_type, "aggregate_type cut"),
        aggregate_id: field(&e.aggregate_id, "aggregate_id cut"),
        payload,
        created_at: e.created_at,
        idempotency_key: e
            .idempotency_key
            .as_deref()
            .map(|k| field(k, "idempotency_key cut")),
    };
    (clean, changes)
}

/// Replaces `\0` with the text `\u0000` in every string and key; `true` if any was found.
fn escape_nuls(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    let fix = |s: &str| s.replace('\0', "\\u0000");
    match v {
        Value::String(s) if s.contains('\0') => {
            *s = fix(s);
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, i| escape_nuls(i) | any),
        Value::Object(map) => {
            let mut any = false;
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (fix(&k), v))
                    .collect();
                any = true;
            }
            map.values_mut().fold(any, |any, i| escape_nuls(i) | any)
        }
        _ => false,
    }
}

/// The envelope with its payload replaced by a reference: how large it was, its first 512
/// characters as JSON text, and why it is not stored; no idempotency key; short text fields.
fn referenced(e: &outbox::Envelope, reason: &str) -> outbox::Envelope {
    let text = e.payload.to_string();
    let short = |s: &str, max: usize| {
        let s = storable(s, max);
        if s.is_empty() { "-".to_owned() } else { s }
    };
    outbox::Envelope {
        id: e.id,
        event_type: short(&e.event_type, 200),
        aggregate_type: short(&e.aggregate_type, 200),
        aggregate_id: short(&e.aggregate_id, MAX_FIELD_BYTES),
        payload: serde_json::json!({
            "outbox_payload_not_stored": {
                "reason": storable(reason, 500),
                "payload_bytes": text.len(),
                "payload_head": text.chars().take(512).collect::<String>(),
                "idempotency_key_head": e.idempotency_key.as_deref().map(|k| storable(k, 200)),
            }
        }),
        created_at: e.created_at,
        idempotency_key: None,
    }
}

async fn park_message(pool: &PgPool, e: &outbox::Envelope, error: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    // Conflicts on the id only: a message already parked (by an earlier run) stays as it is,
    // while a taken idempotency key is an error, so the event is stored in another form
    // rather than silently not at all.
    sqlx::query(
        "INSERT INTO outbox_events
            (id, event_type, aggregate_type, aggregate_id, payload, created_at, idempotency_key, status, last_error, publish_attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'failed', $8, 1)
         ON CONFLICT (id) DO NOTHING",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nuls_are_escaped_in_payloads_and_dropped_from_text() {
        let e = outbox::Envelope {
            id: Uuid::new_v4(),
            event_type: "x\0y".into(),
            aggregate_type: "msg".into(),
            aggregate_id: "m".into(),
            payload: serde_json::json!({"a": ["ok", "n\0ul"], "k\0": 1}),
            created_at: chrono::Utc::now(),
            idempotency_key: Some("k".repeat(3000)),
        };
        let (clean, changes) = sanitized(&e);
        assert_eq!(clean.event_type, "xy");
        assert_eq!(
            clean.payload,
            serde_json::json!({"a": ["ok", "n\\u0000ul"], "k\\u0000": 1})
        );
        assert_eq!(clean.idempotency_key.unwrap().len(), MAX_FIELD_BYTES);
        assert_eq!(changes.len(), 3, "{changes:?}");
        let r = referenced(&e, "too big");
        assert_eq!(r.idempotency_key, None);
        let stored = &r.payload["outbox_payload_not_stored"];
        assert_eq!(stored["reason"], "too big");
        assert_eq!(stored["payload_bytes"], e.payload.to_string().len());
        assert_eq!(storable("é".repeat(3).as_str(), 5), "éé");
    }
}
