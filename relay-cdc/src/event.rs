//! From decoded WAL to the Kafka envelope: an `outbox_events` row, or the JSON content of a
//! `pg_logical_emit_message` record.

use chrono::{DateTime, FixedOffset, Utc};
use outbox::Envelope;
use uuid::Uuid;

use crate::pgoutput::{Row, RowError};

/// Why a WAL record could not become an event. The record is logged and counted, never
/// silently dropped: a row that decodes badly is marked `failed` with this text.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Row(#[from] RowError),
    #[error("column {0} is NULL")]
    Null(&'static str),
    #[error("column {column} has an invalid value {value:?}: {reason}")]
    Invalid {
        column: &'static str,
        value: String,
        reason: String,
    },
    #[error("logical message is not an outbox envelope: {0}")]
    Envelope(String),
}

/// An outbox row from the stream, with what the relay needs besides the envelope.
#[derive(Debug)]
pub struct RowEvent {
    pub envelope: Envelope,
    /// Rows inserted already `sent` or `failed` are not published.
    pub status: String,
}

/// Reads the envelope fields of an inserted `outbox_events` row.
pub fn from_row(row: &Row<'_, '_>) -> Result<RowEvent, EventError> {
    let required = |column: &'static str| -> Result<&str, EventError> {
        row.text(column)?.ok_or(EventError::Null(column))
    };
    let id = required("id")?;
    let id = Uuid::parse_str(id).map_err(|e| invalid("id", id, e))?;
    let payload = required("payload")?;
    let payload = serde_json::from_str(payload).map_err(|e| invalid("payload", payload, e))?;
    let created_at = required("created_at")?;
    let created_at = parse_timestamptz(created_at).map_err(|e| invalid("created_at", created_at, e))?;
    Ok(RowEvent {
        envelope: Envelope {
            id,
            event_type: required("event_type")?.to_owned(),
            aggregate_type: required("aggregate_type")?.to_owned(),
            aggregate_id: required("aggregate_id")?.to_owned(),
            payload,
            created_at,
            idempotency_key: row.text("idempotency_key")?.map(str::to_owned),
        },
        status: required("status")?.to_owned(),
    })
}

/// The id of a row, when the rest of it cannot be read (so it can still be marked `failed`).
pub fn row_id(row: &Row<'_, '_>) -> Option<Uuid> {
    row.text("id")
        .ok()
        .flatten()
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// An `outbox_events` row read with SQL (the backlog scan, `republish`).
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
}

impl OutboxRow {
    /// The columns [`OutboxRow`] reads, for SELECT lists.
    pub const COLUMNS: &'static str =
        "id, event_type, aggregate_type, aggregate_id, payload, created_at, idempotency_key";

    pub fn into_envelope(self) -> Envelope {
        Envelope {
            id: self.id,
            event_type: self.event_type,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            payload: self.payload,
            created_at: self.created_at,
            idempotency_key: self.idempotency_key,
        }
    }
}

/// Parses the content of a logical message as an envelope.
pub fn from_message(content: &[u8]) -> Result<Envelope, EventError> {
    let envelope: Envelope =
        serde_json::from_slice(content).map_err(|e| EventError::Envelope(e.to_string()))?;
    if envelope.event_type.is_empty()
        || envelope.aggregate_type.is_empty()
        || envelope.aggregate_id.is_empty()
    {
        return Err(EventError::Envelope(
            "event_type, aggregate_type and aggregate_id must not be empty".into(),
        ));
    }
    Ok(envelope)
}

fn invalid(column: &'static str, value: &str, reason: impl std::fmt::Display) -> EventError {
    EventError::Invalid {
        column,
        value: value.chars().take(80).collect(),
        reason: reason.to_string(),
    }
}

/// `timestamptz` as pgoutput sends it in text (`DateStyle=ISO`): `2024-05-01 12:35:00.123456+00`,
/// with an offset of hours, or hours and minutes. The relay's session runs with `TimeZone=UTC`,
/// but the offset is honoured whatever it is.
pub fn parse_timestamptz(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    let normalized;
    let with_minutes = match s.rfind(['+', '-']) {
        // `+00` or `+05` at the end: add minutes so %z accepts it.
        Some(i) if s.len() - i == 3 => {
            normalized = format!("{s}:00");
            normalized.as_str()
        }
        _ => s,
    };
    DateTime::<FixedOffset>::parse_from_str(with_minutes, "%Y-%m-%d %H:%M:%S%.f%:z")
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamptz_text_forms() {
        let t = parse_timestamptz("2024-05-01 12:35:00+00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T12:35:00+00:00");
        let t = parse_timestamptz("2024-05-01 12:35:00.123456+05:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T07:05:00.123456+00:00");
        let t = parse_timestamptz("2024-05-01 02:00:00.5-03").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T05:00:00.500+00:00");
        assert!(parse_timestamptz("yesterday").is_err());
    }

    #[test]
    fn message_envelopes_are_validated() {
        let ok = br#"{"id":"9b2f0e4e-8a7e-4a51-9d4c-1f1f1f1f1f1f","event_type":"game.finished","aggregate_type":"game","aggregate_id":"g1","payload":{},"created_at":"2024-05-01T12:35:00Z"}"#;
        let e = from_message(ok).unwrap();
        assert_eq!(e.aggregate_id, "g1");
        assert_eq!(e.idempotency_key, None);
        assert!(from_message(b"not json").is_err());
        let empty = br#"{"id":"9b2f0e4e-8a7e-4a51-9d4c-1f1f1f1f1f1f","event_type":"","aggregate_type":"game","aggregate_id":"g1","payload":{},"created_at":"2024-05-01T12:35:00Z"}"#;
        assert!(
            from_message(empty)
                .unwrap_err()
                .to_string()
                .contains("must not be empty")
        );
    }
}
