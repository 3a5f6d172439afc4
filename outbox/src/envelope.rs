//! The message contract on Kafka (key, value, headers: the README's relay-cdc section).
//!
//! Key: `aggregate_id`. Value: this envelope as JSON. Headers repeat `id`, `event_type`,
//! `aggregate_type` and `idempotency_key` so consumers can route without parsing the body.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One outbox event as published to Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Header names; the values are the envelope fields of the same name.
pub mod headers {
    pub const ID: &str = "id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const AGGREGATE_TYPE: &str = "aggregate_type";
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
}

impl Envelope {
    /// The Kafka record key: per-aggregate order is kept by partitioning on it.
    pub fn key(&self) -> &str {
        &self.aggregate_id
    }

    /// `(name, value)` pairs for the Kafka headers. A missing idempotency key is not sent.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (headers::ID, self.id.to_string()),
            (headers::EVENT_TYPE, self.event_type.clone()),
            (headers::AGGREGATE_TYPE, self.aggregate_type.clone()),
        ];
        if let Some(k) = &self.idempotency_key {
            h.push((headers::IDEMPOTENCY_KEY, k.clone()));
        }
        h
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).expect("envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_every_field() {
        let e = Envelope {
            id: Uuid::new_v4(),
            event_type: "game.finished".into(),
            aggregate_type: "game".into(),
            aggregate_id: "11111111-1111-1111-1111-111111111111".into(),
            payload: serde_json::json!({"chat_id": -5056821738i64}),
            created_at: Utc::now(),
            idempotency_key: Some("demo-1".into()),
        };
        let back: Envelope = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(back, e);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "aggregate_id",
                "aggregate_type",
                "created_at",
                "event_type",
                "id",
                "idempotency_key",
                "payload"
            ]
        );
        assert_eq!(e.key(), "11111111-1111-1111-1111-111111111111");
        assert_eq!(e.headers().len(), 4);
    }
}
