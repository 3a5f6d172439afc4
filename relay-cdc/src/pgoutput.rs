//! Decoder for pgoutput, PostgreSQL's logical replication output plugin, protocol version 1
//! (`proto_version '1'`, `messages 'true'`); the format is PostgreSQL's "Logical Replication
//! Message Formats". Pure and allocation-light for the hot path: Begin, Commit, Insert and
//! Message borrow from the input buffer and allocate nothing. Only Relation messages, sent once per
//! table and session, are copied into owned values so a [`RelationCache`] can keep them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::lsn::Lsn;

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A pgoutput/replication-protocol timestamp (microseconds since 2000-01-01 UTC) as a UTC time;
/// `None` outside chrono's range.
pub fn pg_timestamp_to_utc(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_UNIX_MICROS)?)
}

/// The inverse of [`pg_timestamp_to_utc`], for the timestamps a client sends (status updates).
pub fn utc_to_pg_timestamp(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros().saturating_sub(PG_EPOCH_UNIX_MICROS)
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage<'a> {
    Begin(Begin),
    Commit(Commit),
    Relation(Relation),
    Insert(Insert<'a>),
    Message(Message<'a>),
    /// Parsed and validated, but nothing the relay acts on.
    Skipped(Skipped<'a>),
}

/// Start of a transaction; only sent once the transaction has a change to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// Start of the commit record: equals [`Commit::commit_lsn`].
    pub final_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC; see [`pg_timestamp_to_utc`].
    pub commit_time: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by PostgreSQL 15 (always 0); kept raw rather than rejected.
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// End of the commit record: the position to confirm once the transaction is handled.
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC; see [`pg_timestamp_to_utc`].
    pub commit_time: i64,
}

/// A table's description. The server sends it before the first row of that table in a session
/// and again after the table changes, so rows are only readable through a [`RelationCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// In tuple order; generated and dropped columns are absent from both.
    pub columns: Vec<Column>,
}

impl Relation {
    /// The index of a column in this relation's tuples; callers on the hot path can keep it.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `namespace.name`, for messages.
    pub fn qualified_name(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.namespace, self.name)
        }
    }
}

/// `pg_class.relreplident`: which old values Update and Delete carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`
    Nothing,
    /// `f`: the whole old row.
    Full,
    /// `i`: a chosen unique index.
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Bit 1: part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`, -1 when the type has none.
    pub type_modifier: i32,
}

impl Column {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insert<'a> {
    pub relation: u32,
    pub tuple: TupleData<'a>,
}

/// A `pg_logical_emit_message` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Transactional messages arrive between Begin and Commit, and only if the transaction
    /// committed; the others arrive at once, alone, even from transactions that roll back.
    pub transactional: bool,
    /// The end of the message's WAL record (what `pg_logical_emit_message` returned).
    pub lsn: Lsn,
    pub prefix: &'a str,
    /// Arbitrary bytes; not necessarily UTF-8.
    pub content: &'a [u8],
}

/// Messages the relay does not act on, validated like the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped<'a> {
    /// Describes a non-built-in column type before a Relation uses it.
    Type {
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    /// Follows Begin when the transaction was replayed from another node.
    Origin {
        commit_lsn: Lsn,
        name: &'a str,
    },
    Truncate {
        relation_count: u32,
        /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
        options: u8,
    },
    Update {
        relation: u32,
        /// Present only when the replica identity changed or is FULL.
        old: Option<OldTuple<'a>>,
        new: TupleData<'a>,
    },
    Delete {
        relation: u32,
        old: OldTuple<'a>,
    },
}

/// The old values in an Update or Delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: replica identity key columns only; the others are null.
    Key(TupleData<'a>),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData<'a>),
}

/// A row's values, validated when decoded and read lazily, so that decoding allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TupleData<'a> {
    columns: u16,
    raw: &'a [u8],
}

impl<'a> TupleData<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.columns)
    }

    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    pub fn iter(&self) -> TupleIter<'a> {
        TupleIter {
            reader: Reader::new("tuple", self.raw, 0),
            remaining: self.columns,
        }
    }

    /// The value of the column at `index`, walking the values before it.
    pub fn get(&self, index: usize) -> Option<TupleValue<'a>> {
        self.iter().nth(index)
    }
}

impl std::fmt::Debug for TupleData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[derive(Debug, Clone)]
pub struct TupleIter<'a> {
    reader: Reader<'a>,
    remaining: u16,
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = TupleValue<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        // The bytes were validated by `decode`, so this never fails.
        self.reader.tuple_value(0).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    Null,
    /// A TOASTed value an Update did not change: the server does not resend it.
    UnchangedToast,
    /// The type's text output, in the server encoding.
    Text(&'a [u8]),
    /// The type's binary send format (only with the `binary 'true'` option).
    Binary(&'a [u8]),
}

impl std::fmt::Debug for TupleValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TupleValue::Null => f.write_str("Null"),
            TupleValue::UnchangedToast => f.write_str("UnchangedToast"),
            TupleValue::Text(t) => write!(f, "Text({:?})", t.escape_ascii().to_string()),
            TupleValue::Binary(b) => write!(f, "Binary({:?})", b.escape_ascii().to_string()),
        }
    }
}

/// What was malformed, where (byte offset from the tag), and in which message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error(
        "unknown pgoutput message tag '{}' ({tag:#04x}); protocol version 1 sends only B C R I U D T Y O M",
        .tag.escape_ascii()
    )]
    UnknownTag { tag: u8 },
    #[error(
        "{message} message truncated at {field} (offset {offset}: needs {needed} bytes, {available} left)"
    )]
    Truncated {
        message: &'static str,
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{message} message: {field} at offset {offset} has no terminating NUL")]
    UnterminatedString {
        message: &'static str,
        field: &'static str,
        offset: usize,
    },
    #[error("{message} message: {field} at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        message: &'static str,
        field: &'static str,
        offset: usize,
    },
    #[error("{message} message: negative {field} {length} at offset {offset}")]
    NegativeLength {
        message: &'static str,
        field: &'static str,
        length: i32,
        offset: usize,
    },
    #[error(
        "{message} message: unknown tuple kind '{}' ({kind:#04x}) for column {column} at offset {offset}",
        .kind.escape_ascii()
    )]
    UnknownTupleKind {
        message: &'static str,
        kind: u8,
        column: u16,
        offset: usize,
    },
    #[error(
        "{message} message: expected {expected} at offset {offset}, found '{}' ({found:#04x})",
        .found.escape_ascii()
    )]
    UnexpectedMarker {
        message: &'static str,
        expected: &'static str,
        found: u8,
        offset: usize,
    },
    #[error(
        "Relation message: unknown replica identity '{}' ({value:#04x}) at offset {offset}",
        .value.escape_ascii()
    )]
    UnknownReplicaIdentity { value: u8, offset: usize },
    #[error("{message} message: {count} unexpected bytes after the last field (offset {offset})")]
    TrailingBytes {
        message: &'static str,
        count: usize,
        offset: usize,
    },
}

/// Decodes one pgoutput message (the payload of an XLogData frame, or one `data` row of
/// `pg_logical_slot_*_binary_changes`). Every field is checked, trailing bytes included;
/// malformed input is an error, never a panic.
pub fn decode(buf: &[u8]) -> Result<LogicalMessage<'_>, DecodeError> {
    let (&tag, body) = buf.split_first().ok_or(DecodeError::Empty)?;
    let name = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'R' => "Relation",
        b'I' => "Insert",
        b'M' => "Message",
        b'Y' => "Type",
        b'O' => "Origin",
        b'T' => "Truncate",
        b'U' => "Update",
        b'D' => "Delete",
        // Streaming and two-phase messages need protocol version 2 or 3, which we never request.
        _ => return Err(DecodeError::UnknownTag { tag }),
    };
    let mut r = Reader::new(name, body, 1);
    let message = match tag {
        b'B' => LogicalMessage::Begin(Begin {
            final_lsn: r.lsn("final LSN")?,
            commit_time: r.i64("commit timestamp")?,
            xid: r.u32("xid")?,
        }),
        b'C' => LogicalMessage::Commit(Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit LSN")?,
            end_lsn: r.lsn("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        }),
        b'R' => LogicalMessage::Relation(r.relation()?),
        b'I' => {
            let relation = r.u32("relation oid")?;
            r.marker(b"N", "'N' (new tuple)")?;
            LogicalMessage::Insert(Insert {
                relation,
                tuple: r.tuple()?,
            })
        }
        b'M' => LogicalMessage::Message(Message {
            transactional: r.u8("flags")? & 1 != 0,
            lsn: r.lsn("message LSN")?,
            prefix: r.str("prefix")?,
            content: {
                let len = r.len("content length")?;
                r.bytes(len, "content")?
            },
        }),
        b'Y' => LogicalMessage::Skipped(Skipped::Type {
            oid: r.u32("type oid")?,
            namespace: r.str("type namespace")?,
            name: r.str("type name")?,
        }),
        b'O' => LogicalMessage::Skipped(Skipped::Origin {
            commit_lsn: r.lsn("origin commit LSN")?,
            name: r.str("origin name")?,
        }),
        b'T' => {
            let relation_count = r.u32("relation count")?;
            let options = r.u8("options")?;
            // Fails at the end of the buffer, so a huge count cannot loop for long.
            for _ in 0..relation_count {
                r.u32("relation oid")?;
            }
            LogicalMessage::Skipped(Skipped::Truncate {
                relation_count,
                options,
            })
        }
        b'U' => {
            let relation = r.u32("relation oid")?;
            let old = match r.marker(b"KON", "'K', 'O' or 'N' (tuple)")? {
                b'N' => None,
                kind => {
                    let old = r.old_tuple(kind)?;
                    r.marker(b"N", "'N' (new tuple)")?;
                    Some(old)
                }
            };
            LogicalMessage::Skipped(Skipped::Update {
                relation,
                old,
                new: r.tuple()?,
            })
        }
        // b'D', the only tag left.
        _ => {
            let relation = r.u32("relation oid")?;
            let kind = r.marker(b"KO", "'K' or 'O' (old tuple)")?;
            LogicalMessage::Skipped(Skipped::Delete {
                relation,
                old: r.old_tuple(kind)?,
            })
        }
    };
    r.finish()?;
    Ok(message)
}

/// A cursor over one message that names the message and field in its errors.
#[derive(Debug, Clone)]
struct Reader<'a> {
    message: &'static str,
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(message: &'static str, rest: &'a [u8], offset: usize) -> Self {
        Reader {
            message,
            rest,
            offset,
        }
    }

    fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            message: self.message,
            field,
            offset: self.offset,
            needed,
            available: self.rest.len(),
        }
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest: &'a [u8] = self.rest;
        let (head, tail) = rest.split_at_checked(n).ok_or_else(|| self.truncated(field, n))?;
        self.rest = tail;
        self.offset += n;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let rest: &'a [u8] = self.rest;
        let (head, tail) = rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(field, N))?;
        self.rest = tail;
        self.offset += N;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// An Int32 length that must not be negative.
    fn len(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let offset = self.offset;
        let length = self.i32(field)?;
        usize::try_from(length).map_err(|_| DecodeError::NegativeLength {
            message: self.message,
            field,
            length,
            offset,
        })
    }

    /// A NUL-terminated UTF-8 string (names, prefixes), borrowed without the NUL.
    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let offset = self.offset;
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                message: self.message,
                field,
                offset,
            })?;
        let bytes = self.bytes(nul + 1, field)?;
        std::str::from_utf8(&bytes[..nul]).map_err(|_| DecodeError::BadUtf8 {
            message: self.message,
            field,
            offset,
        })
    }

    /// A one-byte marker that must be one of `allowed`.
    fn marker(&mut self, allowed: &[u8], expected: &'static str) -> Result<u8, DecodeError> {
        let offset = self.offset;
        let found = self.u8(expected)?;
        if allowed.contains(&found) {
            Ok(found)
        } else {
            Err(DecodeError::UnexpectedMarker {
                message: self.message,
                expected,
                found,
                offset,
            })
        }
    }

    fn tuple_value(&mut self, column: u16) -> Result<TupleValue<'a>, DecodeError> {
        let offset = self.offset;
        match self.u8("tuple value kind")? {
            b'n' => Ok(TupleValue::Null),
            b'u' => Ok(TupleValue::UnchangedToast),
            b't' => {
                let len = self.len("text value length")?;
                Ok(TupleValue::Text(self.bytes(len, "text value")?))
            }
            b'b' => {
                let len = self.len("binary value length")?;
                Ok(TupleValue::Binary(self.bytes(len, "binary value")?))
            }
            kind => Err(DecodeError::UnknownTupleKind {
                message: self.message,
                kind,
                column,
                offset,
            }),
        }
    }

    /// Validates a TupleData once, so that reading it later cannot fail.
    fn tuple(&mut self) -> Result<TupleData<'a>, DecodeError> {
        let columns = self.u16("tuple column count")?;
        let start: &'a [u8] = self.rest;
        for column in 0..columns {
            self.tuple_value(column)?;
        }
        // `rest` is a suffix of `start`.
        let raw = &start[..start.len() - self.rest.len()];
        Ok(TupleData { columns, raw })
    }

    fn old_tuple(&mut self, kind: u8) -> Result<OldTuple<'a>, DecodeError> {
        let tuple = self.tuple()?;
        Ok(if kind == b'K' {
            OldTuple::Key(tuple)
        } else {
            OldTuple::Full(tuple)
        })
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let oid = self.u32("relation oid")?;
        let namespace = self.str("namespace")?.to_owned();
        let name = self.str("relation name")?.to_owned();
        let offset = self.offset;
        let replica_identity = match self.u8("replica identity")? {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            value => return Err(DecodeError::UnknownReplicaIdentity { value, offset }),
        };
        let count = self.u16("column count")?;
        // A column takes at least 10 bytes: a bogus count must not reserve megabytes.
        let mut columns = Vec::with_capacity(usize::from(count).min(self.rest.len() / 10));
        for _ in 0..count {
            columns.push(Column {
                flags: self.u8("column flags")?,
                name: self.str("column name")?.to_owned(),
                type_oid: self.u32("column type oid")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                count: self.rest.len(),
                offset: self.offset,
            })
        }
    }
}

/// The Relation messages seen on this replication session, by oid.
#[derive(Debug, Clone, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Relation>,
}

impl RelationCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a Relation message, replacing an older description of the same table.
    pub fn insert(&mut self, relation: Relation) {
        self.relations.insert(relation.oid, relation);
    }

    pub fn get(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// The inserted row with its column names.
    pub fn row<'r, 'a>(&'r self, insert: &Insert<'a>) -> Result<Row<'r, 'a>, RowError> {
        let relation = self
            .get(insert.relation)
            .ok_or(RowError::UnknownRelation { oid: insert.relation })?;
        if relation.columns.len() != insert.tuple.len() {
            return Err(RowError::ColumnCount {
                relation: relation.qualified_name(),
                expected: relation.columns.len(),
                actual: insert.tuple.len(),
            });
        }
        Ok(Row {
            relation,
            tuple: insert.tuple,
        })
    }
}

/// A tuple whose column count matches its Relation, read by column name.
#[derive(Debug, Clone, Copy)]
pub struct Row<'r, 'a> {
    relation: &'r Relation,
    tuple: TupleData<'a>,
}

impl<'r, 'a> Row<'r, 'a> {
    pub fn relation(&self) -> &'r Relation {
        self.relation
    }

    pub fn value(&self, column: &str) -> Result<TupleValue<'a>, RowError> {
        self.relation
            .column_index(column)
            .and_then(|i| self.tuple.get(i))
            .ok_or_else(|| RowError::NoSuchColumn {
                relation: self.relation.qualified_name(),
                column: column.to_owned(),
            })
    }

    /// A column's text value; `None` for SQL NULL.
    pub fn text(&self, column: &str) -> Result<Option<&'a str>, RowError> {
        let not_text = |kind| RowError::NotText {
            relation: self.relation.qualified_name(),
            column: column.to_owned(),
            kind,
        };
        match self.value(column)? {
            TupleValue::Null => Ok(None),
            TupleValue::Text(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| RowError::BadUtf8 {
                    relation: self.relation.qualified_name(),
                    column: column.to_owned(),
                }),
            TupleValue::UnchangedToast => Err(not_text("an unchanged TOAST placeholder")),
            TupleValue::Binary(_) => Err(not_text("binary")),
        }
    }
}

/// Why a row could not be read by column name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("row for relation oid {oid} arrived before any Relation message describing it")]
    UnknownRelation { oid: u32 },
    #[error("{relation}: the Relation message lists {expected} columns, the row has {actual}")]
    ColumnCount {
        relation: String,
        expected: usize,
        actual: usize,
    },
    #[error("{relation} has no column {column:?}")]
    NoSuchColumn { relation: String, column: String },
    #[error("{relation}.{column} was sent as {kind}, not as text")]
    NotText {
        relation: String,
        column: String,
        kind: &'static str,
    },
    #[error("{relation}.{column} is not valid UTF-8")]
    BadUtf8 { relation: String, column: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use outbox::envelope::Envelope;
    use proptest::prelude::*;

    macro_rules! fixtures {
        ($($name:literal),* $(,)?) => {
            [$(($name, include_bytes!(concat!("../tests/fixtures/pgoutput/", $name, ".bin")).as_slice())),*]
        };
    }

    /// Every message of the capture, in the server's order (see the fixtures' README).
    const CAPTURE: [(&str, &[u8]); 39] = fixtures![
        "01_begin",
        "02_relation",
        "03_insert",
        "04_insert",
        "05_insert",
        "06_message",
        "07_commit",
        "08_begin",
        "09_insert",
        "10_commit",
        "11_message",
        "12_begin",
        "13_message",
        "14_commit",
        "15_begin",
        "16_type",
        "17_relation",
        "18_insert",
        "19_insert",
        "20_update",
        "21_update",
        "22_delete",
        "23_relation",
        "24_insert",
        "25_update",
        "26_delete",
        "27_commit",
        "28_begin",
        "29_type",
        "30_relation",
        "31_relation",
        "32_truncate",
        "33_commit",
        "34_begin",
        "35_origin",
        "36_type",
        "37_relation",
        "38_insert",
        "39_commit",
    ];
    const BINARY_INSERT: &[u8] = include_bytes!("../tests/fixtures/pgoutput/binary_insert.bin");
    const MANIFEST: &str = include_str!("../tests/fixtures/pgoutput/manifest.tsv");

    const OUTBOX_OID: u32 = 0x4378;
    const SCRATCH_OID: u32 = 0x43b3;
    const SCRATCH_FULL_OID: u32 = 0x43bb;
    const MOOD_OID: u32 = 0x43ac;

    fn fixture(name: &str) -> &'static [u8] {
        CAPTURE.iter().find(|(n, _)| *n == name).expect("fixture").1
    }

    fn msg(name: &str) -> LogicalMessage<'static> {
        decode(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The server's `(lsn, xid)` for a capture row, as `pg_logical_slot_peek_binary_changes` printed them.
    fn manifest(name: &str) -> (Lsn, u32) {
        let line = MANIFEST
            .lines()
            .find(|l| l.starts_with(&format!("{name}.bin\t")))
            .expect("manifest row");
        let mut cols = line.split('\t').skip(1);
        let lsn_text = cols.next().unwrap();
        let lsn: Lsn = lsn_text.parse().unwrap();
        assert_eq!(
            lsn.to_string(),
            lsn_text,
            "Display matches the server's text form"
        );
        (lsn, cols.next().unwrap().parse().unwrap())
    }

    fn begin(name: &str) -> Begin {
        match msg(name) {
            LogicalMessage::Begin(b) => b,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn commit(name: &str) -> Commit {
        match msg(name) {
            LogicalMessage::Commit(c) => c,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn relation(name: &str) -> Relation {
        match msg(name) {
            LogicalMessage::Relation(r) => r,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn insert(bytes: &[u8]) -> Insert<'_> {
        match decode(bytes).unwrap() {
            LogicalMessage::Insert(i) => i,
            other => panic!("{other:?}"),
        }
    }

    fn message(name: &str) -> Message<'static> {
        match msg(name) {
            LogicalMessage::Message(m) => m,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn skipped(name: &str) -> Skipped<'static> {
        match msg(name) {
            LogicalMessage::Skipped(s) => s,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn cache() -> RelationCache {
        let mut cache = RelationCache::new();
        for name in ["02_relation", "17_relation", "23_relation"] {
            cache.insert(relation(name));
        }
        cache
    }

    fn texts<'a>(tuple: TupleData<'a>) -> Vec<Option<&'a str>> {
        tuple
            .iter()
            .map(|v| match v {
                TupleValue::Null => None,
                TupleValue::Text(t) => Some(std::str::from_utf8(t).unwrap()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn timestamptz(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .unwrap()
            .to_utc()
    }

    /// What the relay will do with an outbox row: the envelope, from text values by name.
    fn envelope(row: &Row<'_, '_>) -> Envelope {
        let text = |c| row.text(c).unwrap();
        Envelope {
            id: text("id").unwrap().parse().unwrap(),
            event_type: text("event_type").unwrap().into(),
            aggregate_type: text("aggregate_type").unwrap().into(),
            aggregate_id: text("aggregate_id").unwrap().into(),
            payload: serde_json::from_str(text("payload").unwrap()).unwrap(),
            created_at: timestamptz(text("created_at").unwrap()),
            idempotency_key: text("idempotency_key").map(str::to_owned),
        }
    }

    #[test]
    fn every_captured_message_decodes_as_the_kind_it_was_captured_as() {
        for (name, bytes) in CAPTURE {
            let kind = match decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}")) {
                LogicalMessage::Begin(_) => "begin",
                LogicalMessage::Commit(_) => "commit",
                LogicalMessage::Relation(_) => "relation",
                LogicalMessage::Insert(_) => "insert",
                LogicalMessage::Message(_) => "message",
                LogicalMessage::Skipped(Skipped::Type { .. }) => "type",
                LogicalMessage::Skipped(Skipped::Origin { .. }) => "origin",
                LogicalMessage::Skipped(Skipped::Truncate { .. }) => "truncate",
                LogicalMessage::Skipped(Skipped::Update { .. }) => "update",
                LogicalMessage::Skipped(Skipped::Delete { .. }) => "delete",
            };
            assert_eq!(name.split_once('_').unwrap().1, kind);
        }
    }

    #[test]
    fn outbox_relation_lists_every_column_in_table_order() {
        let rel = relation("02_relation");
        assert_eq!(
            (rel.oid, rel.namespace.as_str(), rel.name.as_str()),
            (OUTBOX_OID, "public", "outbox_events")
        );
        assert_eq!(rel.qualified_name(), "public.outbox_events");
        assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
        let columns: Vec<_> = rel
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid, c.is_key(), c.type_modifier))
            .collect();
        assert_eq!(
            columns,
            [
                ("id", 2950, true, -1), // uuid
                ("event_type", 25, false, -1),
                ("aggregate_type", 25, false, -1),
                ("aggregate_id", 25, false, -1),
                ("payload", 3802, false, -1),    // jsonb
                ("created_at", 1184, false, -1), // timestamptz
                ("publish_attempts", 23, false, -1),
                ("last_error", 25, false, -1),
                ("published_at", 1184, false, -1),
                ("idempotency_key", 25, false, -1),
                ("status", 25, false, -1),
            ]
        );
        assert_eq!(rel.column_index("payload"), Some(4));
        assert_eq!(rel.column_index("nope"), None);
    }

    #[test]
    fn outbox_transaction_decodes_to_envelopes() {
        let cache = cache();
        let b = begin("01_begin");
        assert_eq!(b.final_lsn, "0/63D90F8".parse().unwrap());
        assert_eq!(b.xid, manifest("01_begin").1);

        let row = |name| {
            let i = insert(fixture(name));
            assert_eq!(i.relation, OUTBOX_OID);
            i
        };
        let first = row("03_insert");
        let first = cache.row(&first).unwrap();
        assert_eq!(
            envelope(&first),
            Envelope {
                id: "6f1c2a34-8b5e-4d7f-9a01-23456789abcd".parse().unwrap(),
                event_type: "game.started".into(),
                aggregate_type: "game".into(),
                aggregate_id: "игра-42".into(),
                // jsonb's text output, normalized by the server.
                payload: serde_json::json!({"chat_id": -5056821738i64, "players": ["аня", "bob"]}),
                created_at: timestamptz("2024-05-01 12:34:56.789012+00"),
                idempotency_key: Some("start-42".into()),
            }
        );
        assert_eq!(
            first.text("payload").unwrap(),
            Some(r#"{"chat_id": -5056821738, "players": ["аня", "bob"]}"#)
        );
        assert_eq!(first.text("status").unwrap(), Some("new"));
        assert_eq!(first.text("publish_attempts").unwrap(), Some("0"));
        assert_eq!(first.text("last_error").unwrap(), None);
        assert_eq!(first.value("published_at").unwrap(), TupleValue::Null);

        let defaults = row("04_insert");
        assert_eq!(
            texts(defaults.tuple),
            [
                Some("00000000-0000-4000-8000-000000000002"),
                Some("game.joined"),
                Some("game"),
                Some("game-42"),
                Some("{}"),
                Some("2024-05-01 12:35:00+00"),
                Some("0"),
                None,
                None,
                None,
                Some("new"),
            ]
        );
        assert_eq!(envelope(&cache.row(&defaults).unwrap()).idempotency_key, None);

        // The seed's step-4 INSERT: now() is the transaction start, before the commit time.
        let seed = envelope(&cache.row(&row("05_insert")).unwrap());
        assert_eq!(
            (
                seed.event_type.as_str(),
                seed.aggregate_type.as_str(),
                seed.aggregate_id.as_str()
            ),
            ("game.finished", "game", "11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(
            seed.payload,
            serde_json::json!({"game_id": "11111111-1111-1111-1111-111111111111", "chat_id": -5056821738i64})
        );
        assert!(seed.idempotency_key.as_deref().unwrap().starts_with("demo-"));
        let committed = pg_timestamp_to_utc(b.commit_time).unwrap();
        assert!(seed.created_at <= committed && committed - seed.created_at < TimeDelta::seconds(10));

        let m = message("06_message");
        assert!(m.transactional);
        assert_eq!(m.prefix, "outbox");
        assert_eq!(m.lsn, manifest("06_message").0);
        // It ends right where the commit record starts.
        assert_eq!(m.lsn, b.final_lsn);
        let emitted: Envelope = serde_json::from_slice(m.content).unwrap();
        assert_eq!(
            (
                emitted.id.to_string().as_str(),
                emitted.event_type.as_str(),
                emitted.aggregate_id.as_str()
            ),
            ("7d444840-9dc0-11d1-b245-5ffdce74fad2", "score.changed", "p-7")
        );
        assert_eq!(emitted.idempotency_key, None);

        let c = commit("07_commit");
        assert_eq!(c.flags, 0);
        assert_eq!(c.commit_lsn, b.final_lsn);
        assert_eq!(c.end_lsn, "0/63D9128".parse().unwrap());
        assert_eq!(c.end_lsn, manifest("07_commit").0);
        assert_eq!(c.commit_time, b.commit_time);
    }

    #[test]
    fn toasted_payload_arrives_whole_and_needs_the_earlier_relation() {
        assert_eq!(begin("08_begin").xid, manifest("08_begin").1);
        let big = insert(fixture("09_insert"));
        assert_eq!(
            RelationCache::new().row(&big).unwrap_err(),
            RowError::UnknownRelation { oid: OUTBOX_OID }
        );
        let cache = cache();
        let row = cache.row(&big).unwrap();
        assert_eq!(
            row.text("id").unwrap(),
            Some("00000000-0000-4000-8000-000000000003")
        );
        let payload: serde_json::Value = serde_json::from_str(row.text("payload").unwrap().unwrap()).unwrap();
        let moves = payload["moves"].as_str().unwrap();
        assert_eq!(moves.len(), 32_000);
        assert!(moves.starts_with("c4ca4238a0b923820dcc509a6f75849b")); // md5('1')
        assert!(moves.ends_with("a9b7ba70783b617e9998dc4dd82eb3c5")); // md5('1000')
        assert!(commit("10_commit").end_lsn > commit("07_commit").end_lsn);
    }

    #[test]
    fn rolled_back_transaction_leaves_only_its_non_transactional_message() {
        let m = message("11_message");
        assert!(!m.transactional);
        assert_eq!(
            (m.prefix, m.content),
            ("audit", b"rolled back, still delivered".as_slice())
        );
        let (lsn, xid) = manifest("11_message");
        assert_eq!(m.lsn, lsn);
        let cache = cache();
        for (name, bytes) in CAPTURE {
            match decode(bytes).unwrap() {
                LogicalMessage::Begin(b) => assert_ne!(b.xid, xid, "{name}"),
                LogicalMessage::Insert(i) if i.relation == OUTBOX_OID => {
                    let id = cache.row(&i).unwrap().text("id").unwrap();
                    assert_ne!(id, Some("00000000-0000-4000-8000-0000000000ff"), "{name}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn transactional_message_content_is_raw_bytes() {
        let (b, c) = (begin("12_begin"), commit("14_commit"));
        let m = message("13_message");
        assert!(m.transactional);
        assert_eq!(m.prefix, "outbox");
        assert_eq!(m.content, [0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]);
        assert!(m.lsn <= c.commit_lsn && c.commit_lsn == b.final_lsn);
        assert_eq!(b.xid, manifest("13_message").1);
    }

    #[test]
    fn skipped_messages_are_validated_and_named() {
        assert_eq!(
            skipped("16_type"),
            Skipped::Type {
                oid: MOOD_OID,
                namespace: "public",
                name: "mood"
            }
        );
        let scratch = relation("17_relation");
        assert_eq!((scratch.oid, scratch.name.as_str()), (SCRATCH_OID, "scratch"));
        assert_eq!(scratch.columns[3].type_oid, MOOD_OID);
        assert_eq!(scratch.columns.iter().filter(|c| c.is_key()).count(), 1);

        let cache = cache();
        let first = insert(fixture("18_insert"));
        let first = cache.row(&first).unwrap();
        assert_eq!(first.text("big").unwrap().unwrap(), "x".repeat(5000));
        assert_eq!(first.text("feeling").unwrap(), Some("happy"));
        assert_eq!(
            texts(insert(fixture("19_insert")).tuple),
            [Some("2"), None, None, None]
        );

        // The untouched out-of-line column is not resent.
        let Skipped::Update {
            relation: SCRATCH_OID,
            old: None,
            new,
        } = skipped("20_update")
        else {
            panic!("20_update")
        };
        assert_eq!(
            new.iter().collect::<Vec<_>>(),
            [
                TupleValue::Text(b"1"),
                TupleValue::Text(b"second"),
                TupleValue::UnchangedToast,
                TupleValue::Text(b"happy")
            ]
        );
        // A changed key sends the old key; its other columns are null.
        let Skipped::Update {
            old: Some(OldTuple::Key(old)),
            new,
            ..
        } = skipped("21_update")
        else {
            panic!("21_update")
        };
        assert_eq!(
            (texts(old), texts(new)),
            (
                vec![Some("2"), None, None, None],
                vec![Some("3"), None, None, None]
            )
        );
        let Skipped::Delete {
            relation: SCRATCH_OID,
            old: OldTuple::Key(old),
        } = skipped("22_delete")
        else {
            panic!("22_delete")
        };
        assert_eq!(texts(old), [Some("3"), None, None, None]);

        // REPLICA IDENTITY FULL marks every column as key and sends whole old rows.
        let full = relation("23_relation");
        assert_eq!(
            (full.oid, full.replica_identity),
            (SCRATCH_FULL_OID, ReplicaIdentity::Full)
        );
        assert!(full.columns.iter().all(Column::is_key));
        let Skipped::Update {
            old: Some(OldTuple::Full(old)),
            new,
            ..
        } = skipped("25_update")
        else {
            panic!("25_update")
        };
        assert_eq!(
            (texts(old), texts(new)),
            (vec![Some("1"), Some("full")], vec![Some("1"), Some("fuller")])
        );
        let Skipped::Delete {
            relation: SCRATCH_FULL_OID,
            old: OldTuple::Full(old),
        } = skipped("26_delete")
        else {
            panic!("26_delete")
        };
        assert_eq!(texts(old), [Some("1"), Some("fuller")]);

        assert_eq!(
            skipped("32_truncate"),
            Skipped::Truncate {
                relation_count: 2,
                options: 3
            }
        );
        assert_eq!(
            skipped("35_origin"),
            Skipped::Origin {
                commit_lsn: "1/ABCDEF01".parse().unwrap(),
                name: "pgoutput_fixtures_origin"
            }
        );
        assert_eq!(
            texts(insert(fixture("38_insert")).tuple),
            [Some("10"), Some("from origin"), None, Some("ok")]
        );
    }

    #[test]
    fn binary_mode_values_are_not_text() {
        let cache = cache();
        let i = insert(BINARY_INSERT);
        let row = cache.row(&i).unwrap();
        let uuid: uuid::Uuid = "6f1c2a34-8b5e-4d7f-9a01-23456789abcd".parse().unwrap();
        assert_eq!(row.value("id").unwrap(), TupleValue::Binary(uuid.as_bytes()));
        assert_eq!(
            row.value("publish_attempts").unwrap(),
            TupleValue::Binary(&[0, 0, 0, 0])
        );
        // jsonb's binary format is a version byte, then the text.
        let TupleValue::Binary([1, json @ ..]) = row.value("payload").unwrap() else {
            panic!("payload")
        };
        assert!(json.starts_with(br#"{"chat_id""#));
        assert_eq!(row.text("last_error").unwrap(), None);
        assert_eq!(
            row.text("id").unwrap_err().to_string(),
            "public.outbox_events.id was sent as binary, not as text"
        );
    }

    #[test]
    fn lsns_order_the_captured_transactions() {
        let mut open: Option<Begin> = None;
        let mut last_end = Lsn::INVALID;
        let mut transactions = 0;
        for (name, bytes) in CAPTURE {
            let (row_lsn, row_xid) = manifest(name);
            match decode(bytes).unwrap() {
                LogicalMessage::Begin(b) => {
                    assert!(open.replace(b).is_none(), "{name}: nested Begin");
                    assert_eq!(b.xid, row_xid, "{name}");
                    assert!(b.final_lsn > last_end, "{name}");
                }
                LogicalMessage::Commit(c) => {
                    let b = open.take().expect("Commit without Begin");
                    assert_eq!(c.commit_lsn, b.final_lsn, "{name}");
                    assert_eq!(c.commit_time, b.commit_time, "{name}");
                    assert!(c.end_lsn > c.commit_lsn, "{name}");
                    assert_eq!(c.end_lsn, row_lsn, "{name}");
                    last_end = c.end_lsn;
                    transactions += 1;
                }
                LogicalMessage::Message(m) if !m.transactional => assert!(open.is_none(), "{name}"),
                _ => {
                    let b = open.expect("change outside a transaction");
                    assert_eq!(row_xid, b.xid, "{name}");
                }
            }
        }
        assert!(open.is_none());
        assert_eq!(transactions, 6);
    }

    #[test]
    fn timestamps_count_from_2000() {
        let epoch = pg_timestamp_to_utc(0).unwrap();
        assert_eq!(epoch.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        assert_eq!(utc_to_pg_timestamp(epoch + TimeDelta::microseconds(7)), 7);
        assert_eq!(pg_timestamp_to_utc(i64::MAX), None);
        let t = timestamptz("2024-05-01 12:34:56.789012+00");
        assert_eq!(pg_timestamp_to_utc(utc_to_pg_timestamp(t)), Some(t));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let with = |name: &str, at: usize, byte: u8| {
            let mut b = fixture(name).to_vec();
            b[at] = byte;
            decode(&b).unwrap_err()
        };
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        assert_eq!(decode(b"X"), Err(DecodeError::UnknownTag { tag: b'X' }));
        // Stream Start: protocol version 2 only.
        assert_eq!(
            decode(b"S\0\0\0\x01\x01").unwrap_err().to_string(),
            "unknown pgoutput message tag 'S' (0x53); protocol version 1 sends only B C R I U D T Y O M"
        );
        assert_eq!(
            decode(&fixture("01_begin")[..20]),
            Err(DecodeError::Truncated {
                message: "Begin",
                field: "xid",
                offset: 17,
                needed: 4,
                available: 3
            })
        );
        assert_eq!(
            decode(&fixture("01_begin")[..20]).unwrap_err().to_string(),
            "Begin message truncated at xid (offset 17: needs 4 bytes, 3 left)"
        );
        let mut long = fixture("07_commit").to_vec();
        long.push(0);
        assert_eq!(
            decode(&long),
            Err(DecodeError::TrailingBytes {
                message: "Commit",
                count: 1,
                offset: 26
            })
        );
        assert_eq!(
            with("03_insert", 5, b'K'),
            DecodeError::UnexpectedMarker {
                message: "Insert",
                expected: "'N' (new tuple)",
                found: b'K',
                offset: 5
            }
        );
        assert_eq!(
            with("03_insert", 8, b'x'),
            DecodeError::UnknownTupleKind {
                message: "Insert",
                kind: b'x',
                column: 0,
                offset: 8
            }
        );
        assert_eq!(
            with("03_insert", 9, 0xff),
            DecodeError::NegativeLength {
                message: "Insert",
                field: "text value length",
                length: -16777180,
                offset: 9
            }
        );
        assert_eq!(
            with("02_relation", 12, 0xff),
            DecodeError::BadUtf8 {
                message: "Relation",
                field: "relation name",
                offset: 12
            }
        );
        assert_eq!(
            with("02_relation", 26, b'x'),
            DecodeError::UnknownReplicaIdentity {
                value: b'x',
                offset: 26
            }
        );
        let ty = fixture("16_type");
        assert_eq!(
            decode(&ty[..ty.len() - 1]),
            Err(DecodeError::UnterminatedString {
                message: "Type",
                field: "type name",
                offset: 12
            })
        );
        assert_eq!(
            with("26_delete", 5, b'N'),
            DecodeError::UnexpectedMarker {
                message: "Delete",
                expected: "'K' or 'O' (old tuple)",
                found: b'N',
                offset: 5
            }
        );
    }

    #[test]
    fn every_strict_prefix_of_a_real_message_is_an_error() {
        for (name, bytes) in CAPTURE.iter().copied().chain([("binary_insert", BINARY_INSERT)]) {
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{name} cut at {cut}");
            }
        }
    }

    #[test]
    fn rows_check_their_relation() {
        let mut cache = cache();
        let i = insert(fixture("03_insert"));
        let row = cache.row(&i).unwrap();
        assert_eq!(row.relation().name, "outbox_events");
        assert_eq!(
            row.text("nope").unwrap_err().to_string(),
            "public.outbox_events has no column \"nope\""
        );
        // A stale description (wrong column count) is refused rather than misread.
        let mut stale = relation("17_relation");
        stale.oid = OUTBOX_OID;
        cache.insert(stale);
        assert_eq!(
            cache.row(&i).unwrap_err(),
            RowError::ColumnCount {
                relation: "public.scratch".into(),
                expected: 4,
                actual: 11
            }
        );
        let mut latin1 = fixture("38_insert").to_vec();
        let at = latin1.len() - 1;
        latin1[at] = 0xe9;
        let i = insert(&latin1);
        assert_eq!(
            cache.row(&i).unwrap().text("feeling").unwrap_err(),
            RowError::BadUtf8 {
                relation: "public.scratch".into(),
                column: "feeling".into()
            }
        );
    }

    /// Reads everything a decoded message exposes, as the relay would.
    fn exercise(message: &LogicalMessage<'_>, cache: &RelationCache) {
        let walk = |t: &TupleData<'_>| assert_eq!(t.iter().count(), t.len());
        match message {
            LogicalMessage::Insert(i) => {
                walk(&i.tuple);
                if let Ok(row) = cache.row(i) {
                    for c in &row.relation().columns {
                        let _ = row.text(&c.name);
                    }
                }
            }
            LogicalMessage::Skipped(Skipped::Update { old, new, .. }) => {
                walk(new);
                if let Some(OldTuple::Key(t) | OldTuple::Full(t)) = old {
                    walk(t);
                }
            }
            LogicalMessage::Skipped(Skipped::Delete {
                old: OldTuple::Key(t) | OldTuple::Full(t),
                ..
            }) => walk(t),
            LogicalMessage::Relation(r) => {
                let _ = r.qualified_name();
            }
            _ => {}
        }
        let _ = format!("{message:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(m) = decode(&bytes) {
                exercise(&m, &cache());
            }
        }

        #[test]
        fn arbitrary_bodies_after_a_known_tag_never_panic(
            tag in prop::sample::select(b"BCRIMYOTUD".to_vec()),
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = vec![tag];
            bytes.extend(body);
            match decode(&bytes) {
                Ok(m) => exercise(&m, &cache()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn mutated_real_messages_never_panic(
            which in 0..CAPTURE.len() + 1,
            cut in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ) {
            let original = CAPTURE.get(which).map_or(BINARY_INSERT, |(_, b)| *b);
            let mut bytes = original[..cut.index(original.len() + 1)].to_vec();
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            match decode(&bytes) {
                Ok(m) => exercise(&m, &cache()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
