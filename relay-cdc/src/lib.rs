//! relay-cdc: streams `outbox_events` inserts (and `pg_logical_emit_message` envelopes) from a
//! pgoutput logical replication slot to Kafka, marks rows `sent`, and confirms the slot only
//! past what Kafka has acknowledged.

pub mod ack;
pub mod checks;
pub mod event;
pub mod leader;
pub mod lsn;
pub mod mark;
pub mod metrics;
pub mod ops;
pub mod pgoutput;
pub mod producer;
pub mod relay;
pub mod replication;
pub mod slot;
