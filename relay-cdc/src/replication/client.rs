//! The replication connection in command mode: startup, authentication, replication commands.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::ReplicationError;
use super::params::ConnectParams;
use super::stream::ReplicationStream;
use super::wire::{self, Backend};
use crate::lsn::Lsn;

/// How long to wait for the TCP connection before reporting the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The standby status update cadence while streaming; pg_recvlogical's default, a third of
/// the stock 60 s `wal_sender_timeout`.
const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// One result row of a replication command or query, text values (`None` is SQL NULL).
pub type Row = Vec<Option<String>>;

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    pub system_id: u64,
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// The answer to CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCreated {
    /// Streaming from here yields exactly the transactions the snapshot does not see.
    pub consistent_point: Lsn,
    /// The exported snapshot, valid until the next command on this connection (or its close).
    pub snapshot_name: Option<String>,
}

/// A `replication=database` connection in command mode.
///
/// Commands are not cancel-safe: a call dropped mid-way leaves the protocol state unknown, and
/// every later call then fails with [`ReplicationError::Protocol`]; reconnect instead.
pub struct ReplicationClient {
    stream: TcpStream,
    buf: BytesMut,
    status_interval: Duration,
    /// Set while a command runs; still set afterwards means it was cancelled.
    busy: bool,
}

impl ReplicationClient {
    /// Opens a replication connection (`replication=database`) and authenticates with
    /// SCRAM-SHA-256, MD5 or cleartext, whichever the server asks for. Plain TCP: TLS is not
    /// implemented (an `sslmode` that requires it is refused).
    pub async fn connect(database_url: &str) -> Result<Self, ReplicationError> {
        let params = ConnectParams::parse(database_url)?;
        let addr = format!("{}:{}", params.host, params.port);
        let connect = TcpStream::connect((params.host.as_str(), params.port));
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(ReplicationError::Connect { addr, error }),
            Err(_) => {
                let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(ReplicationError::Connect { addr, error });
            }
        };
        // Standby status updates are tiny and must leave at once.
        stream.set_nodelay(true)?;
        let mut client = Self::from_parts(stream, BytesMut::new(), DEFAULT_STATUS_INTERVAL);
        client.startup(&params).await?;
        tracing::debug!(%addr, user = %params.user, database = %params.database, "replication connection ready");
        Ok(client)
    }

    pub(crate) fn from_parts(stream: TcpStream, buf: BytesMut, status_interval: Duration) -> Self {
        Self {
            stream,
            buf,
            status_interval,
            busy: false,
        }
    }

    /// How often the stream sends a standby status update on its own (10 s by default), also
    /// while the consumer is not reading. Keep it well under the server's `wal_sender_timeout`.
    pub fn with_status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    async fn startup(&mut self, params: &ConnectParams) -> Result<(), ReplicationError> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", params.user.as_str()),
                ("database", params.database.as_str()),
                ("replication", "database"),
                ("application_name", params.application_name.as_str()),
                // pgoutput sends column values as the session's output functions write them,
                // and we parse that text: pin every setting that changes it, so a database's or
                // role's own (`ALTER DATABASE/ROLE ... SET DateStyle = 'SQL, DMY'`) cannot.
                // Startup parameters take precedence over both.
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO"),
                ("TimeZone", "UTC"),
                ("IntervalStyle", "postgres"),
                ("extra_float_digits", "3"),
                ("bytea_output", "hex"),
            ],
            &mut out,
        )?;
        self.send(&mut out).await?;
        let password = || {
            params.password.as_deref().map(str::as_bytes).ok_or_else(|| {
                ReplicationError::Config(format!(
                    "the server asks a password for role {:?} and neither the URL nor PGPASSWORD has one",
                    params.user
                ))
            })
        };
        let mut scram = None;
        loop {
            match self.read().await? {
                Backend::Message(Message::AuthenticationOk) => {}
                Backend::Message(Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password()?, &mut out)?;
                    self.send(&mut out).await?;
                }
                Backend::Message(Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(params.user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                    self.send(&mut out).await?;
                }
                Backend::Message(Message::AuthenticationSasl(body)) => {
                    let mechanisms: Vec<String> = body.mechanisms().map(|m| Ok(m.to_owned())).collect()?;
                    // SCRAM-SHA-256-PLUS needs TLS channel binding, which plain TCP cannot offer.
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(ReplicationError::UnsupportedAuth(format!("SASL {mechanisms:?}")));
                    }
                    let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    self.send(&mut out).await?;
                    scram = Some(s);
                }
                Backend::Message(Message::AuthenticationSaslContinue(body)) => {
                    let s = scram.as_mut().ok_or_else(|| unexpected("SASLContinue"))?;
                    s.update(body.data())
                        .map_err(|e| ReplicationError::Protocol(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(s.message(), &mut out)?;
                    self.send(&mut out).await?;
                }
                Backend::Message(Message::AuthenticationSaslFinal(body)) => {
                    // Verifies the server's signature: it knew the password too.
                    let s = scram.as_mut().ok_or_else(|| unexpected("SASLFinal"))?;
                    s.finish(body.data())
                        .map_err(|e| ReplicationError::Protocol(format!("SCRAM: {e}")))?;
                }
                Backend::Message(
                    Message::AuthenticationGss
                    | Message::AuthenticationGssContinue(_)
                    | Message::AuthenticationSspi
                    | Message::AuthenticationKerberosV5
                    | Message::AuthenticationScmCredential,
                ) => return Err(ReplicationError::UnsupportedAuth("GSSAPI/SSPI/Kerberos".into())),
                Backend::Message(Message::ErrorResponse(body)) => {
                    let error = Box::new(wire::server_error(body.fields()));
                    let user = params.user.clone();
                    // 42501 is also "no CONNECT privilege"; PG 15 says "...start walsender",
                    // PG 16+ "...start WAL sender".
                    let walsender = error.message.to_lowercase().replace("wal sender", "walsender");
                    return Err(match error.code.as_str() {
                        "28P01" | "28000" => ReplicationError::AuthFailed { user, error },
                        "42501" if walsender.contains("walsender") => {
                            ReplicationError::NoReplicationPrivilege { user, error }
                        }
                        _ => ReplicationError::Server(error),
                    });
                }
                Backend::Message(Message::ReadyForQuery(_)) => return Ok(()),
                other => self.ignore(other, "startup")?,
            }
        }
    }

    /// Runs one command with the simple query protocol and returns its rows. Replication
    /// commands (IDENTIFY_SYSTEM, DROP_REPLICATION_SLOT, SHOW, ...) and, on a
    /// `replication=database` connection, SQL are accepted; START_REPLICATION is not (use
    /// [`Self::start_replication`]). A server error leaves the connection usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ReplicationError> {
        if self.busy {
            return Err(ReplicationError::Protocol(
                "an earlier command on this connection was cancelled; reconnect".into(),
            ));
        }
        self.busy = true;
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(&mut out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read().await? {
                Backend::Message(Message::DataRow(body)) => {
                    let buf = body.buffer();
                    let row = body
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect()
                        .map_err(|e| ReplicationError::Protocol(format!("DataRow: {e}")))?;
                    rows.push(row);
                }
                Backend::Message(
                    Message::RowDescription(_) | Message::CommandComplete(_) | Message::EmptyQueryResponse,
                ) => {}
                Backend::Message(Message::ErrorResponse(body)) => {
                    error = Some(Box::new(wire::server_error(body.fields())))
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    self.busy = false;
                    return error.map_or(Ok(rows), |e| Err(ReplicationError::Server(e)));
                }
                // Copy modes would leave the connection mid-protocol: `busy` stays set.
                Backend::CopyBothResponse => return Err(unexpected("CopyBothResponse to a simple query")),
                other => self.ignore(other, "query")?,
            }
        }
    }

    /// IDENTIFY_SYSTEM: the cluster's identity and current WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let [systemid, timeline, xlogpos, dbname] = single_row::<4>(rows, "IDENTIFY_SYSTEM")?;
        Ok(SystemInfo {
            system_id: parse_field(systemid, "systemid")?,
            timeline: parse_field(timeline, "timeline")?,
            xlogpos: parse_field(xlogpos, "xlogpos")?,
            dbname,
        })
    }

    /// CREATE_REPLICATION_SLOT `name` LOGICAL `plugin` (PG 15 syntax).
    ///
    /// With `export_snapshot`, the returned snapshot shows the database exactly as of
    /// `consistent_point`. It lives only while this connection stays idle: before any other call
    /// here (start_replication included), import it on an ordinary connection with
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '<name>';` (importing is
    /// enough; that transaction then keeps it for as long as it needs).
    pub async fn create_logical_slot(
        &mut self,
        name: &str,
        plugin: &str,
        export_snapshot: bool,
    ) -> Result<SlotCreated, ReplicationError> {
        let snapshot = if export_snapshot { "export" } else { "nothing" };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL {} (SNAPSHOT '{snapshot}')",
            quote_ident(name),
            quote_ident(plugin)
        );
        let rows = self.simple_query(&sql).await?;
        let [_slot, consistent_point, snapshot_name, _plugin] =
            single_row::<4>(rows, "CREATE_REPLICATION_SLOT")?;
        let created = SlotCreated {
            consistent_point: parse_field(consistent_point, "consistent_point")?,
            snapshot_name,
        };
        tracing::info!(slot = name, consistent_point = %created.consistent_point,
            snapshot = ?created.snapshot_name, "created logical replication slot");
        Ok(created)
    }

    /// DROP_REPLICATION_SLOT; with `wait`, waits for an active slot to be released instead of
    /// failing with SQLSTATE 55006.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), ReplicationError> {
        let sql = format!(
            "DROP_REPLICATION_SLOT {}{}",
            quote_ident(name),
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&sql).await?;
        tracing::info!(slot = name, "dropped replication slot");
        Ok(())
    }

    /// START_REPLICATION SLOT `slot` LOGICAL `start_lsn` (`options`), e.g. pgoutput's
    /// `[("proto_version", "1"), ("publication_names", "outbox_pub"), ("messages", "true")]`.
    /// `Lsn::INVALID` starts at the slot's confirmed position.
    ///
    /// Consumes the connection; [`ReplicationStream::finish`] gives it back. A server error
    /// (slot missing, slot active elsewhere: SQLSTATE 42704, 55006) closes the connection.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start_lsn: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, ReplicationError> {
        let mut sql = format!("START_REPLICATION SLOT {} LOGICAL {start_lsn}", quote_ident(slot));
        if !options.is_empty() {
            let options: Vec<String> = options
                .iter()
                .map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v)))
                .collect();
            sql = format!("{sql} ({})", options.join(", "));
        }
        if self.busy {
            return Err(ReplicationError::Protocol(
                "an earlier command on this connection was cancelled; reconnect".into(),
            ));
        }
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out)?;
        self.send(&mut out).await?;
        loop {
            match self.read().await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(ReplicationError::Server(Box::new(wire::server_error(
                        body.fields(),
                    ))));
                }
                other => self.ignore(other, "START_REPLICATION")?,
            }
        }
        tracing::info!(slot, %start_lsn, "logical replication stream started");
        Ok(ReplicationStream::new(
            self.stream,
            self.buf,
            self.status_interval,
        ))
    }

    async fn send(&mut self, out: &mut BytesMut) -> Result<(), ReplicationError> {
        self.stream.write_all(out).await?;
        out.clear();
        Ok(())
    }

    async fn read(&mut self) -> Result<Backend, ReplicationError> {
        wire::read(&mut self.stream, &mut self.buf).await
    }

    /// Skips the asynchronous messages the server may send at any time; anything else is a
    /// protocol error.
    fn ignore(&self, message: Backend, during: &str) -> Result<(), ReplicationError> {
        match message {
            Backend::Message(Message::NoticeResponse(body)) => {
                let notice = wire::server_error(body.fields());
                tracing::debug!(during, %notice, "server notice");
                Ok(())
            }
            Backend::Message(
                Message::ParameterStatus(_) | Message::BackendKeyData(_) | Message::NotificationResponse(_),
            ) => Ok(()),
            _ => Err(unexpected(during)),
        }
    }
}

fn unexpected(during: &str) -> ReplicationError {
    ReplicationError::Protocol(format!("unexpected message from the server during {during}"))
}

fn single_row<const N: usize>(
    rows: Vec<Row>,
    command: &str,
) -> Result<[Option<String>; N], ReplicationError> {
    let mut rows = rows.into_iter();
    match (rows.next(), rows.next()) {
        (Some(row), None) => row.try_into().map_err(|row: Row| {
            ReplicationError::Protocol(format!("{command} returned {} columns, expected {N}", row.len()))
        }),
        _ => Err(ReplicationError::Protocol(format!(
            "{command} did not return exactly one row"
        ))),
    }
}

fn parse_field<T: std::str::FromStr>(value: Option<String>, name: &str) -> Result<T, ReplicationError> {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ReplicationError::Protocol(format!("unexpected {name} value {value:?}")))
}

/// A double-quoted identifier, as the replication command grammar accepts.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_names_and_values() {
        assert_eq!(quote_ident("outbox_slot"), "\"outbox_slot\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
