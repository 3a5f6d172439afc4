//! The idempotent consumer of outbox-cdc: applies `game-events` to PostgreSQL exactly once.
//!
//! At-least-once delivery from Kafka becomes exactly-once effects because one transaction both
//! records the event id in `consumed_events` and applies the event's effects, and the offset is
//! stored only after that transaction commits. Messages that cannot be handled go to
//! `<topic>.dlq`.
//!
//! - [`config`]: settings (flags and environment variables).
//! - [`service`]: the poll → apply → store-offsets loop, shutdown.
//! - [`kafka`]: consumer and producer set-up, rebalance callbacks.
//! - [`message`]: decoding a record into what is to be done with it.
//! - [`apply`]: the batch transaction, retries, error classification.
//! - [`handlers`]: effects by event type (the cross-game leaderboard).
//! - [`dlq`]: dead letters and `redrive`.
//! - [`metrics`]: Prometheus metrics and the `[metrics]` log line.

pub mod apply;
pub mod config;
pub mod dlq;
pub mod handlers;
pub mod kafka;
pub mod message;
pub mod metrics;
pub mod service;
pub mod shutdown;

pub use config::{KafkaArgs, RunConfig};
pub use service::Service;
