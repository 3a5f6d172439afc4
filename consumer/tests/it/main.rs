//! Integration tests of the consumer against the real PostgreSQL and Kafka that
//! `scripts/services up` starts (`eval "$(scripts/services env)"`). Every test has its own
//! database and topics; the PostgreSQL outage test starts a private cluster of its own.

mod common;
mod dedup;
mod dlq;
mod faults;
mod pipeline;
mod secrets;
