//! The replication connection in CopyBoth mode: WAL in, standby status updates out.
//!
//! Reading and writing are split. The consumer reads at its own pace through
//! [`ReplicationStream::next`]; a small task owns the write half and sends standby status
//! updates: at once when asked (by `send_status`, or by a keepalive that requests a reply), and
//! every status interval regardless. So a consumer that stops reading (backpressure) still tells
//! the server it is alive, and `wal_sender_timeout` never fires: a server blocked on a full
//! socket cannot deliver its keepalive requests, so answering them alone would not be enough.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ReplicationError;
use super::client::ReplicationClient;
use super::wire::{self, Backend};
use crate::lsn::Lsn;

/// 2000-01-01, the epoch of the protocol's timestamps, in Unix seconds.
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// One message of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// Output of the plugin (for pgoutput one protocol message, its first byte the type).
    /// For logical replication `wal_start` is the LSN the message belongs to (a Commit's
    /// `wal_start` is the end of the commit record: the position to confirm once it is done).
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        server_time: SystemTime,
        data: Bytes,
    },
    /// The server's heartbeat. A requested reply has already been sent (with the positions last
    /// given to `send_status`); confirming up to `wal_end` when nothing is in flight keeps an
    /// idle slot from pinning WAL.
    PrimaryKeepalive {
        wal_end: Lsn,
        server_time: SystemTime,
        reply_requested: bool,
    },
}

/// What the status writer should report next. `seq` numbers the requests so that
/// `send_status` can wait for its own.
#[derive(Clone, Copy)]
struct Status {
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    seq: u64,
    /// The `seq` of the last request that asked the server for a reply.
    reply_seq: u64,
}

/// What the status writer has done.
#[derive(Default)]
struct Written {
    seq: u64,
    error: Option<Arc<std::io::Error>>,
}

/// A running `START_REPLICATION ... LOGICAL` stream.
///
/// [`Self::next`] is cancel-safe (bytes are buffered in the stream, and a message is taken off
/// the buffer without awaiting), so it can sit in a `tokio::select!` beside other futures.
/// [`Self::send_status`] may be cancelled too: the update is still sent, just not awaited.
///
/// Dropping the stream sends CopyDone and closes the connection without waiting for the server.
pub struct ReplicationStream {
    read: OwnedReadHalf,
    buf: BytesMut,
    status: watch::Sender<Status>,
    written: watch::Receiver<Written>,
    writer: JoinHandle<std::io::Result<OwnedWriteHalf>>,
    status_interval: Duration,
    /// The server has ended the COPY (CopyDone).
    ended: bool,
}

impl ReplicationStream {
    pub(crate) fn new(stream: TcpStream, buf: BytesMut, status_interval: Duration) -> Self {
        let (read, write) = stream.into_split();
        // Positions start invalid (0/0): the server ignores them until the consumer confirms.
        let (status, status_rx) = watch::channel(Status {
            write: Lsn::INVALID,
            flush: Lsn::INVALID,
            apply: Lsn::INVALID,
            seq: 0,
            reply_seq: 0,
        });
        let (written_tx, written) = watch::channel(Written::default());
        let writer = tokio::spawn(write_status(write, status_rx, written_tx, status_interval));
        Self {
            read,
            buf,
            status,
            written,
            writer,
            status_interval,
            ended: false,
        }
    }

    /// The next message, or `None` once the server has ended the stream. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<ReplicationEvent>, ReplicationError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some(error) = &self.written.borrow().error {
                return Err(std::io::Error::new(error.kind(), error.to_string()).into());
            }
            match wire::read(&mut self.read, &mut self.buf).await? {
                Backend::Message(Message::CopyData(body)) => {
                    return self.copy_data(body.into_bytes()).map(Some);
                }
                Backend::Message(Message::CopyDone) => {
                    tracing::info!("the server ended the replication stream");
                    self.ended = true;
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(ReplicationError::Server(Box::new(wire::server_error(
                        body.fields(),
                    ))));
                }
                Backend::Message(Message::NoticeResponse(body)) => {
                    tracing::debug!(notice = %wire::server_error(body.fields()), "server notice");
                }
                Backend::Message(Message::ParameterStatus(_)) => {}
                _ => {
                    return Err(ReplicationError::Protocol(
                        "unexpected message in the replication stream".into(),
                    ));
                }
            }
        }
    }

    fn copy_data(&mut self, mut data: Bytes) -> Result<ReplicationEvent, ReplicationError> {
        let short = |what: &str| ReplicationError::Protocol(format!("short {what} message"));
        match data.first() {
            Some(b'w') if data.len() >= 25 => {
                data.advance(1);
                let wal_start = Lsn(data.get_u64());
                let wal_end = Lsn(data.get_u64());
                let server_time = pg_time(data.get_i64());
                Ok(ReplicationEvent::XLogData {
                    wal_start,
                    wal_end,
                    server_time,
                    data,
                })
            }
            Some(b'k') if data.len() >= 18 => {
                data.advance(1);
                let wal_end = Lsn(data.get_u64());
                let server_time = pg_time(data.get_i64());
                let reply_requested = data.get_u8() != 0;
                if reply_requested {
                    // No await here: next() stays cancel-safe; the writer sends it at once.
                    self.status.send_modify(|s| s.seq += 1);
                    tracing::trace!(%wal_end, "keepalive requests a reply");
                }
                Ok(ReplicationEvent::PrimaryKeepalive {
                    wal_end,
                    server_time,
                    reply_requested,
                })
            }
            Some(b'w') => Err(short("XLogData")),
            Some(b'k') => Err(short("keepalive")),
            other => Err(ReplicationError::Protocol(format!(
                "unknown CopyData message {other:?}"
            ))),
        }
    }

    /// Sends a standby status update now and waits until it is written. `flush` is what the
    /// slot's `confirmed_flush_lsn` moves to: report only what is durably done, never less than
    /// before (PostgreSQL 15 would move the slot back). The same positions are repeated every
    /// status interval and in answer to keepalives until the next call.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let mut seq = 0;
        self.status.send_modify(|s| {
            s.seq += 1;
            seq = s.seq;
            (s.write, s.flush, s.apply) = (write, flush, apply);
            if reply_requested {
                s.reply_seq = s.seq;
            }
        });
        let written = self
            .written
            .wait_for(|w| w.seq >= seq || w.error.is_some())
            .await
            .map_err(|_| ReplicationError::Protocol("the status writer stopped".into()))?;
        match &written.error {
            Some(error) => Err(std::io::Error::new(error.kind(), error.to_string()).into()),
            None => Ok(()),
        }
    }

    /// Ends the stream (CopyDone), skips what the server had still in flight, and returns the
    /// connection in command mode, e.g. for DROP_REPLICATION_SLOT. Nothing skipped is
    /// confirmed, so the server sends it again next time.
    pub async fn finish(self) -> Result<ReplicationClient, ReplicationError> {
        let Self {
            mut read,
            mut buf,
            status,
            written: _,
            writer,
            status_interval,
            ended: _,
        } = self;
        // Closing the status channel makes the writer send CopyDone and hand back its half.
        drop(status);
        let write = writer
            .await
            .map_err(|e| ReplicationError::Protocol(format!("status writer failed: {e}")))??;
        let mut skipped = 0usize;
        let mut error = None;
        loop {
            match wire::read(&mut read, &mut buf).await? {
                Backend::Message(Message::CopyData(_)) => skipped += 1,
                Backend::Message(Message::ErrorResponse(body)) => {
                    error = Some(Box::new(wire::server_error(body.fields())))
                }
                Backend::Message(Message::ReadyForQuery(_)) => break,
                // CopyDone, CommandComplete, notices, a result set after a timeline switch.
                _ => {}
            }
        }
        tracing::debug!(skipped, "replication stream finished");
        if let Some(error) = error {
            return Err(ReplicationError::Server(error));
        }
        let stream = read
            .reunite(write)
            .map_err(|_| ReplicationError::Protocol("socket halves do not match".into()))?;
        Ok(ReplicationClient::from_parts(stream, buf, status_interval))
    }
}

/// The write half's task: a status update on every request and every `interval`; CopyDone
/// when the stream's sender closes. Whole messages only, so no cancellation can tear one.
async fn write_status(
    mut write: OwnedWriteHalf,
    mut status: watch::Receiver<Status>,
    written: watch::Sender<Written>,
    interval: Duration,
) -> std::io::Result<OwnedWriteHalf> {
    let mut out = BytesMut::with_capacity(64);
    let mut sent_seq = 0;
    loop {
        let closed = tokio::select! {
            changed = status.changed() => changed.is_err(),
            () = tokio::time::sleep(interval) => false,
        };
        out.clear();
        if closed {
            frontend::copy_done(&mut out);
        } else {
            let s = *status.borrow_and_update();
            let mut update = BytesMut::with_capacity(34);
            update.put_u8(b'r');
            update.put_u64(s.write.0);
            update.put_u64(s.flush.0);
            update.put_u64(s.apply.0);
            update.put_i64(pg_now());
            update.put_u8(u8::from(s.reply_seq > sent_seq));
            frontend::CopyData::new(update)?.write(&mut out);
            sent_seq = s.seq;
            tracing::trace!(write = %s.write, flush = %s.flush, "standby status update");
        }
        if let Err(error) = write.write_all(&out).await {
            tracing::warn!(%error, "sending a standby status update failed");
            let kind = error.kind();
            let message = error.to_string();
            written.send_modify(|w| w.error = Some(Arc::new(error)));
            return Err(std::io::Error::new(kind, message));
        }
        if closed {
            return Ok(write);
        }
        written.send_modify(|w| w.seq = sent_seq);
    }
}

fn pg_time(micros: i64) -> SystemTime {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    match u64::try_from(micros) {
        Ok(after) => epoch + Duration::from_micros(after),
        Err(_) => epoch - Duration::from_micros(micros.unsigned_abs()),
    }
}

fn pg_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS))
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_protocol_timestamps() {
        assert_eq!(pg_time(0), UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS));
        assert_eq!(
            pg_time(-1_000_000),
            UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS - 1)
        );
        let now = pg_now();
        let back = pg_time(now);
        assert!(SystemTime::now().duration_since(back).unwrap() < Duration::from_secs(5));
    }
}
