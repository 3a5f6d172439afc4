//! From decoded WAL to the Kafka envelope: an `outbox_events` row, or the JSON content of a
//! `pg_logical_emit_message` record.

use chrono::{DateTime, NaiveDateTime, Utc};
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

/// `timestamptz` as pgoutput sends it in text. The replication session pins `DateStyle=ISO` and
/// `TimeZone=UTC` (see `replication::client`), so the form is `2024-05-01 12:35:00.123456+00`;
/// still, any ISO form is read: fractional seconds or none, a `T` or a space, an offset of
/// hours, hours and minutes, or hours, minutes and seconds (zones before 1900 use local mean
/// time, e.g. `+05:53:28`), or `Z`.
pub fn parse_timestamptz(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    let s = s.trim();
    if let Some(utc) = s.strip_suffix('Z') {
        return NaiveDateTime::parse_from_str(utc, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M:%S%.f"))
            .map(|t| t.and_utc());
    }
    // The offset starts at the last sign after the time of day (the date holds '-' too).
    let time_at = s.find([' ', 'T']).map_or(0, |i| i + 1);
    let sign_at = s[time_at..].rfind(['+', '-']).map(|i| time_at + i);
    let (local, offset) = match sign_at {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "+00"),
    };
    let mut parts = offset[1..].split(':').map(str::parse::<i32>);
    let mut next = || parts.next().transpose().ok().flatten();
    let seconds = match (next(), next(), next()) {
        (Some(h), m, sec) => h * 3600 + m.unwrap_or(0) * 60 + sec.unwrap_or(0),
        // Not an offset: let chrono say what is wrong with the whole.
        _ => return DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)),
    };
    let seconds = if offset.starts_with('-') {
        -seconds
    } else {
        seconds
    };
    let local = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S%.f"))?;
    Ok((local - chrono::Duration::seconds(i64::from(seconds))).and_utc())
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
        let t = parse_timestamptz("1890-01-01 00:00:00+05:53:28").unwrap();
        assert_eq!(t.to_rfc3339(), "1889-12-31T18:06:32+00:00");
        let t = parse_timestamptz("2024-05-01T12:35:00.25Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T12:35:00.250+00:00");
        let t = parse_timestamptz("2024-05-01T12:35:00-09:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T22:05:00+00:00");
        for bad in [
            "yesterday",
            "29/11/2026 03:00:00.5 UTC",
            "2024-05-01 12:35:00+xx",
            "",
        ] {
            assert!(parse_timestamptz(bad).is_err(), "{bad}");
        }
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
