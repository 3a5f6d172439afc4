//! The application side of the transactional outbox: write the event in the same transaction
//! as the domain change. The relay picks it up from the WAL.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// An event to write into `outbox_events`.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub event_type: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub payload: Value,
    /// Deterministic key: a retried command that emits the same key writes nothing twice.
    pub idempotency_key: &'a str,
}

/// Inserts the event inside the caller's transaction. Returns the new event id, or `None`
/// when an event with the same idempotency key already exists (a retry).
pub async fn emit(conn: &mut PgConnection, event: NewEvent<'_>) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id",
    )
    .bind(event.event_type)
    .bind(event.aggregate_type)
    .bind(event.aggregate_id)
    .bind(event.payload)
    .bind(event.idempotency_key)
    .fetch_optional(conn)
    .await
}
