//! The chaos suite: relay-cdc against hostile input and faults, with real PostgreSQL and Kafka.
//!
//! Every case prints one line, `PASS <case>: <figures>` or `FAIL <case>: <why>` (and fails its
//! test on FAIL), so `scripts/chaos` can summarise a run and README "Failure modes" can quote
//! it. One module per family of cases; a new family is one more `mod` line here. Services a case
//! stops or restarts are private to it (`outbox::testkit::PrivateServices`).

#[path = "../common/mod.rs"]
mod common;
mod report;

mod kill9;
mod large_txn;
mod outage;
mod poison;
mod settings;
mod shutdown;
mod startup;
