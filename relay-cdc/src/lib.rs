//! relay-cdc: streams `outbox_events` inserts (and `pg_logical_emit_message` envelopes) from a
//! pgoutput logical replication slot to Kafka, marks rows `sent`, and confirms the slot only
//! past what Kafka has acknowledged. Where logical replication is not allowed, [`poll`] publishes
//! the same rows by polling the table.

pub mod ack;
pub mod checks;
pub mod event;
pub mod kafka_health;
pub mod leader;
pub mod lsn;
pub mod mark;
pub mod metrics;
pub mod ops;
pub mod pgoutput;
pub mod poll;
pub mod producer;
pub mod relay;
pub mod replication;
pub mod retention;
pub mod slot;
