//! A Kafka record as the consumer holds it, and what is to be done with it.
//!
//! Decoding and payload validation are pure and happen before the database transaction: a
//! message that fails them fails the same way on every attempt, so it is dead-lettered at once.

use std::time::Instant;

use chrono::{DateTime, Utc};
use outbox::Envelope;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use serde_json::Value;
use uuid::Uuid;

use crate::handlers::{self, Effect};

/// Namespace of the ids derived for messages without a usable `id` (UUID v5 of
/// `<topic>/<partition>/<offset>`), so a replay of the same record finds the same
/// consumed_events row.
const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f0b_9a52_4c1e_4d7a_9a53_1d2c_0e8b_7f41);

/// The consumed_events id of a message that has no usable id of its own.
pub fn derived_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(
        &DERIVED_ID_NAMESPACE,
        format!("{topic}/{partition}/{offset}").as_bytes(),
    )
}

/// Why a message cannot be handled, whatever the number of attempts.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no value")]
    Empty,
    #[error("value is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("invalid envelope: {0}")]
    Envelope(serde_json::Error),
    #[error(transparent)]
    Payload(#[from] handlers::PayloadError),
}

/// What to do with a message.
#[derive(Debug)]
pub enum Plan {
    /// Record it in consumed_events and, if new, apply the effect. The envelope's payload has
    /// been moved into the effect (it is `null` here).
    Apply { envelope: Envelope, effect: Effect },
    /// Send it to the dead-letter topic and record it as `dlq`.
    Dead {
        id: Uuid,
        event_type: String,
        created_at: Option<DateTime<Utc>>,
        error: DecodeError,
    },
}

impl Plan {
    pub fn event_id(&self) -> Uuid {
        match self {
            Plan::Apply { envelope, .. } => envelope.id,
            Plan::Dead { id, .. } => *id,
        }
    }
}

/// A received record, detached from the consumer so that a batch can outlive the poll that
/// fetched it.
#[derive(Debug)]
pub struct Item {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
    pub received: Instant,
    pub plan: Plan,
}

impl Item {
    pub fn from_message(topic: &str, m: &BorrowedMessage<'_>) -> Self {
        let value = m.payload().map(<[u8]>::to_vec);
        let plan = plan(topic, m.partition(), m.offset(), value.as_deref());
        Item {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value,
            headers: m.headers().map(|h| h.detach()),
            received: Instant::now(),
            plan,
        }
    }
}

/// Decodes the envelope and validates the payload.
pub fn plan(topic: &str, partition: i32, offset: i64, value: Option<&[u8]>) -> Plan {
    let Some(bytes) = value.filter(|v| !v.is_empty()) else {
        return dead(topic, partition, offset, None, DecodeError::Empty);
    };
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(mut envelope) => {
            match handlers::prepare(&envelope.event_type, std::mem::take(&mut envelope.payload)) {
                Ok(effect) => Plan::Apply { envelope, effect },
                Err(e) => Plan::Dead {
                    id: envelope.id,
                    event_type: envelope.event_type,
                    created_at: Some(envelope.created_at),
                    error: e.into(),
                },
            }
        }
        // The slow path: find out what is wrong and salvage what identifies the event.
        Err(envelope_err) => match serde_json::from_slice::<Value>(bytes) {
            Err(e) => dead(topic, partition, offset, None, DecodeError::NotJson(e)),
            Ok(v) => dead(
                topic,
                partition,
                offset,
                Some(&v),
                DecodeError::Envelope(envelope_err),
            ),
        },
    }
}

fn dead(topic: &str, partition: i32, offset: i64, v: Option<&Value>, error: DecodeError) -> Plan {
    let field = |name: &str| v.and_then(|v| v.get(name)).and_then(Value::as_str);
    Plan::Dead {
        id: field("id")
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| derived_id(topic, partition, offset)),
        event_type: field("event_type").unwrap_or_default().to_string(),
        created_at: field("created_at").and_then(|s| s.parse().ok()),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_parts(p: Plan) -> (Uuid, String, String) {
        match p {
            Plan::Dead {
                id,
                event_type,
                error,
                ..
            } => (id, event_type, error.to_string()),
            Plan::Apply { .. } => panic!("expected a dead letter"),
        }
    }

    #[test]
    fn a_valid_envelope_is_applied() {
        let id = Uuid::new_v4();
        let v = serde_json::json!({
            "id": id, "event_type": "game.finished", "aggregate_type": "game", "aggregate_id": "g1",
            "payload": {"game_id": "g1", "chat_id": -5056821738i64},
            "created_at": "2026-11-26T10:00:00Z", "idempotency_key": "g1:game.finished"
        });
        let p = plan("t", 0, 7, Some(&serde_json::to_vec(&v).unwrap()));
        assert_eq!(p.event_id(), id);
        assert!(matches!(
            p,
            Plan::Apply {
                effect: Effect::GameFinished(_),
                ..
            }
        ));
    }

    #[test]
    fn not_json_gets_a_deterministic_derived_id() {
        let (id, ty, err) = dead_parts(plan("t", 2, 41, Some(b"not json")));
        assert_eq!(id, derived_id("t", 2, 41));
        assert_eq!(id, derived_id("t", 2, 41));
        assert_ne!(id, derived_id("t", 2, 42));
        assert_ne!(id, derived_id("u", 2, 41));
        assert_eq!(ty, "");
        assert!(err.starts_with("value is not JSON"), "{err}");
        let (_, _, err) = dead_parts(plan("t", 0, 0, None));
        assert_eq!(err, "message has no value");
    }

    #[test]
    fn a_broken_envelope_keeps_its_usable_id_and_type() {
        let id = Uuid::new_v4();
        let v = serde_json::json!({"id": id.to_string(), "event_type": "game.finished"});
        let (got, ty, err) = dead_parts(plan("t", 0, 3, Some(&serde_json::to_vec(&v).unwrap())));
        assert_eq!(got, id);
        assert_eq!(ty, "game.finished");
        assert!(err.contains("missing field"), "{err}");

        let v = serde_json::json!({"id": "not-a-uuid", "event_type": 5});
        let (got, ty, _) = dead_parts(plan("t", 1, 9, Some(&serde_json::to_vec(&v).unwrap())));
        assert_eq!(got, derived_id("t", 1, 9));
        assert_eq!(ty, "");
    }

    #[test]
    fn an_invalid_payload_is_dead_with_the_event_id() {
        let id = Uuid::new_v4();
        let v = serde_json::json!({
            "id": id, "event_type": "game.finished", "aggregate_type": "game", "aggregate_id": "g1",
            "payload": {"game_id": "g1", "chat_id": 1, "standings": "nope"},
            "created_at": "2026-11-26T10:00:00Z"
        });
        let (got, ty, err) = dead_parts(plan("t", 0, 1, Some(&serde_json::to_vec(&v).unwrap())));
        assert_eq!((got, ty.as_str()), (id, "game.finished"));
        assert!(err.starts_with("invalid game.finished payload"), "{err}");
    }
}
