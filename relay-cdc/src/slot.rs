//! The replication slot as the relay sees it: does it exist, is it usable, and has the backlog
//! of the snapshot it was created with been published?

use anyhow::Context;
use sqlx::PgPool;

use crate::lsn::Lsn;

/// The slot's state, from `pg_replication_slots` and `outbox_relay_slots`.
#[derive(Debug)]
pub struct SlotState {
    pub exists: bool,
    /// `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    /// The relay created it and published its backlog.
    pub backlog_done: bool,
}

impl SlotState {
    /// Why the slot must be (re)created with a fresh snapshot and a re-scan, if it must.
    pub fn needs_recreate(&self) -> Option<&'static str> {
        if !self.exists {
            Some("the slot does not exist (first start, or dropped while the relay was down)")
        } else if self.wal_status.as_deref() == Some("lost") {
            Some("the slot lost WAL it needed (wal_status = lost, max_slot_wal_keep_size exceeded)")
        } else if !self.backlog_done {
            Some("the slot's backlog was not fully published when the relay stopped")
        } else {
            None
        }
    }
}

pub async fn inspect(pool: &PgPool, slot: &str) -> anyhow::Result<SlotState> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(pool)
            .await
            .context("reading pg_replication_slots")?;
    let backlog_done: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM outbox_relay_slots WHERE slot_name = $1 AND backlog_done_at IS NOT NULL)",
    )
    .bind(slot)
    .fetch_one(pool)
    .await
    .context("reading outbox_relay_slots (run `relay-cdc migrate`)")?;
    Ok(SlotState {
        exists: row.is_some(),
        wal_status: row.and_then(|r| r.0),
        backlog_done,
    })
}

pub async fn record_created(pool: &PgPool, slot: &str, consistent_point: Lsn) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO outbox_relay_slots (slot_name, consistent_point) VALUES ($1, $2::text::pg_lsn)
         ON CONFLICT (slot_name) DO UPDATE
            SET consistent_point = EXCLUDED.consistent_point, created_at = now(), backlog_rows = NULL, backlog_done_at = NULL",
    )
    .bind(slot)
    .bind(consistent_point.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn record_backlog_done(pool: &PgPool, slot: &str, rows: u64) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE outbox_relay_slots SET backlog_rows = $2, backlog_done_at = now() WHERE slot_name = $1",
    )
    .bind(slot)
    .bind(rows as i64)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn confirmed_flush(pool: &PgPool, slot: &str) -> anyhow::Result<Lsn> {
    let lsn: Option<String> =
        sqlx::query_scalar("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(pool)
            .await?
            .flatten();
    let lsn = lsn.with_context(|| format!("slot {slot} has no confirmed_flush_lsn"))?;
    lsn.parse().map_err(|e| anyhow::anyhow!("bad LSN {lsn}: {e:?}"))
}

pub async fn current_wal_lsn(pool: &PgPool) -> anyhow::Result<Lsn> {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?;
    lsn.parse().map_err(|e| anyhow::anyhow!("bad LSN {lsn}: {e:?}"))
}
