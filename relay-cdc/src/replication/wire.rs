//! Framing on top of `postgres-protocol`'s backend codec.

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, Header, Message};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{ReplicationError, ServerError};

/// How much to ask the socket for at once: several WAL messages per read syscall.
const READ_CHUNK: usize = 128 * 1024;

/// A backend message. `postgres-protocol` 0.6 has no CopyBothResponse (`W`), the reply to
/// START_REPLICATION, so that one is recognised here.
pub(crate) enum Backend {
    CopyBothResponse,
    Message(Message),
}

/// Takes one complete message off the front of `buf`, or returns `None` when more bytes are
/// needed.
fn parse(buf: &mut BytesMut) -> Result<Option<Backend>, ReplicationError> {
    let protocol = |e: std::io::Error| ReplicationError::Protocol(e.to_string());
    let Some(header) = Header::parse(buf).map_err(protocol)? else {
        return Ok(None);
    };
    if header.tag() == b'W' {
        let total = header.len() as usize + 1;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(total);
        return Ok(Some(Backend::CopyBothResponse));
    }
    Ok(Message::parse(buf).map_err(protocol)?.map(Backend::Message))
}

/// Reads the next message. Cancel-safe: bytes are only ever appended to `buf` by a completed
/// `read_buf`, and a complete message is taken off `buf` without awaiting.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Backend, ReplicationError> {
    loop {
        if let Some(message) = parse(buf)? {
            return Ok(message);
        }
        buf.reserve(READ_CHUNK);
        if reader.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )
            .into());
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse that callers use.
pub(crate) fn server_error(mut fields: ErrorFields<'_>) -> ServerError {
    let mut error = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    // A malformed tail loses only the fields after it.
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => error.severity = value,
            b'S' if error.severity.is_empty() => error.severity = value,
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use postgres_protocol::message::frontend;
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn payload(i: u8) -> Vec<u8> {
        vec![i; usize::from(i % 50) + 1]
    }

    /// Messages trickle in 7-byte pieces and every read that would wait is dropped: nothing is
    /// lost or torn.
    #[tokio::test]
    async fn read_is_cancel_safe_mid_message() {
        let mut bytes = BytesMut::new();
        for i in 0..200u8 {
            frontend::CopyData::new(&payload(i)[..])
                .unwrap()
                .write(&mut bytes);
        }
        let (mut tx, mut rx) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(7) {
                tx.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (mut buf, mut got, mut cancelled) = (BytesMut::new(), Vec::new(), 0);
        while got.len() < 200 {
            // As in the relay's select! loop: the read is dropped whenever it would wait.
            tokio::select! {
                biased;
                message = read(&mut rx, &mut buf) => match message {
                    Ok(Backend::Message(Message::CopyData(body))) => got.push(body.into_bytes()),
                    _ => panic!("not a CopyData"),
                },
                () = std::future::ready(()) => {
                    cancelled += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        writer.await.unwrap();
        assert!(cancelled > 200, "only {cancelled} cancellations");
        for (i, data) in got.iter().enumerate() {
            assert_eq!(data[..], payload(i as u8)[..]);
        }
    }
}
