//! Errors of the replication connection, typed so that callers can print a one-line fix.

use std::fmt;
use std::io;

/// A server `ErrorResponse`: the fields callers branch on or print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC` (the non-localized severity when the server sends it).
    pub severity: String,
    /// The SQLSTATE, e.g. `28P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (SQLSTATE {})", self.severity, self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Every failure of [`super::ReplicationClient`] and [`super::ReplicationStream`]. Server
/// errors are boxed: they are rare, and this keeps every `Result` small.
///
/// Each message carries its cause inline (no `source` chain), so a plain `{}` prints one
/// complete line.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The database URL cannot be used (bad syntax, TLS required, no password to send).
    #[error("replication connection settings: {0}")]
    Config(String),
    /// The TCP connection could not be opened (refused, unreachable, timed out).
    #[error("cannot connect to PostgreSQL at {addr}: {error}")]
    Connect { addr: String, error: io::Error },
    /// Wrong password or no matching pg_hba.conf entry (SQLSTATE 28P01 or 28000).
    #[error("PostgreSQL rejected the login of role {user:?}: {error}")]
    AuthFailed { user: String, error: Box<ServerError> },
    /// The role may log in but lacks the REPLICATION attribute (SQLSTATE 42501 from the
    /// walsender at startup).
    #[error("role {user:?} lacks the REPLICATION attribute (ALTER ROLE {user} REPLICATION): {error}")]
    NoReplicationPrivilege { user: String, error: Box<ServerError> },
    /// The server asks for an authentication method this client does not speak.
    #[error("unsupported authentication method: {0}")]
    UnsupportedAuth(String),
    /// Any other error the server reported.
    #[error("PostgreSQL error: {0}")]
    Server(Box<ServerError>),
    /// The connection broke after it was established.
    #[error("replication connection I/O error: {0}")]
    Io(io::Error),
    /// The server sent something this client did not expect, or a cancelled call left the
    /// connection in an unknown state.
    #[error("replication protocol error: {0}")]
    Protocol(String),
}

impl ReplicationError {
    /// The SQLSTATE of a server-reported error, for branching on e.g. `42710` (slot exists).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::AuthFailed { error, .. }
            | Self::NoReplicationPrivilege { error, .. }
            | Self::Server(error) => Some(&error.code),
            _ => None,
        }
    }
}

impl From<io::Error> for ReplicationError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}
