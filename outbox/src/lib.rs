//! Shared pieces of outbox-cdc.
//!
//! - [`envelope`]: the JSON envelope and headers every event carries on Kafka.
//! - [`emit`]: the application-side API that writes an event into `outbox_events` inside the
//!   caller's transaction (the transactional outbox itself).
//! - [`migrate`]: the embedded SQL migrations (`migrations/{relay,consumer,bot}`), one history
//!   table per owner, and the `migrate` command.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` for every service.
//! - [`telemetry`]: logging set-up shared by the binaries.
//! - [`throttle`]: rate-limited warnings for retry and drain loops (`warn_throttled!`).
//! - `kafka` (feature `kafka`): librdkafka properties from `*_KAFKA_CONFIG`, secret-safe, and
//!   client callbacks that report a failing broker connection once.
//! - `testkit` (feature `testkit`): harness for integration tests against real services.

pub mod emit;
pub mod envelope;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod migrate;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod throttle;

pub use emit::{NewEvent, emit};
pub use envelope::Envelope;
