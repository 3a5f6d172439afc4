//! The logical replication transport: a `replication=database` connection that runs
//! replication commands and streams `START_REPLICATION ... LOGICAL` in CopyBoth mode.
//!
//! Built on `postgres-protocol`'s codecs and SCRAM over a tokio `TcpStream` rather than the
//! `pgwire-replication` crate (0.5), which swallows pgoutput Begin/Commit/Message frames into its
//! own events (our decoder would never see them), fixes the START_REPLICATION options, reports
//! a wrong password or a missing REPLICATION attribute only as a message string, and acks one
//! "applied" LSN on its own schedule. Plain TCP: TLS is not needed yet.

mod client;
mod error;
mod params;
mod stream;
mod wire;

pub use client::{ReplicationClient, Row, SlotCreated, SystemInfo};
pub use error::{ReplicationError, ServerError};
pub use stream::{ReplicationEvent, ReplicationStream};
