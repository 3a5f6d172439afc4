//! Operator commands: `status`, `republish`, `slot drop`.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::checks;
use crate::event::OutboxRow;
use crate::mark;
use crate::producer::{EventProducer, ProducerConfig};

/// active, active_pid, confirmed_flush_lsn, restart_lsn, wal_status, lag bytes.
type SlotRow = (
    bool,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// Prints the slot and the outbox as an operator wants to see them.
pub async fn status(database_url: &str, slot: &str) -> anyhow::Result<()> {
    let pool = checks::connect(database_url, 1).await?;
    let row: Option<SlotRow> = sqlx::query_as(
        "SELECT active, active_pid, confirmed_flush_lsn::text, restart_lsn::text, wal_status,
                    (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
               FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&pool)
    .await?;
    match row {
        None => println!("slot {slot}: does not exist (relay-cdc run creates it)"),
        Some((active, pid, confirmed, restart, wal_status, lag)) => {
            println!("slot {slot}:");
            println!(
                "  active:              {active}{}",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
            println!("  confirmed_flush_lsn: {}", confirmed.unwrap_or_default());
            println!("  restart_lsn:         {}", restart.unwrap_or_default());
            println!("  lag_bytes:           {}", lag.unwrap_or_default());
            println!("  wal_status:          {}", wal_status.unwrap_or_default());
        }
    }
    let counts: Vec<(String, i64)> = sqlx::query_as("SELECT status, events FROM outbox_status_counts")
        .fetch_all(&pool)
        .await?;
    println!("outbox_events by status:");
    for (status, n) in counts {
        println!("  {status:<11} {n}");
    }
    let (oldest, pending): (Option<f64>, i64) =
        sqlx::query_as("SELECT extract(epoch FROM oldest_age)::float8, pending FROM outbox_oldest_pending")
            .fetch_one(&pool)
            .await?;
    println!(
        "oldest pending age:    {:.1} s ({pending} rows not sent)",
        oldest.unwrap_or(0.0)
    );
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_parked_aggregates")
        .fetch_one(&pool)
        .await?;
    println!("parked aggregates:     {parked}");
    Ok(())
}

/// Re-sends every `failed` row, oldest first per aggregate, one at a time per aggregate so order
/// holds; unparks aggregates with nothing left failed. Rows that fail again stay `failed`
/// (their aggregate stays parked) and the command exits non-zero.
pub async fn republish(database_url: &str, cfg: &ProducerConfig) -> anyhow::Result<()> {
    let pool = checks::connect(database_url, 2).await?;
    let (mut producer, mut deliveries) = EventProducer::new(cfg)?;
    producer
        .refresh_topic_limits()
        .await
        .context("reading topic limits from Kafka")?;
    let mut sent = 0u64;
    let mut still_failing: Vec<String> = Vec::new();
    // Loop: the relay may park more events of an aggregate while we work.
    loop {
        let rows: Vec<OutboxRow> = sqlx::query_as(&format!(
            "SELECT {} FROM outbox_events WHERE status = 'failed' AND NOT (aggregate_id = ANY($1))
              ORDER BY seq LIMIT 1000",
            OutboxRow::COLUMNS
        ))
        .bind(&still_failing)
        .fetch_all(&pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in rows {
            if still_failing.contains(&r.aggregate_id) {
                continue;
            }
            let envelope = r.into_envelope();
            let result = match producer.send(0, &envelope, &envelope.to_json()) {
                Ok(()) => {
                    let d = tokio::time::timeout(Duration::from_secs(60), deliveries.recv())
                        .await
                        .context("no delivery report from Kafka within 60 s")?
                        .context("producer stopped")?;
                    d.result.map(|_| ()).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => {
                    mark::mark_sent(&pool, &[envelope.id]).await?;
                    sent += 1;
                }
                Err(e) => {
                    eprintln!(
                        "event {} (aggregate {}) still fails: {e}",
                        envelope.id, envelope.aggregate_id
                    );
                    mark::mark_failed(&pool, envelope.id, Some(&envelope.aggregate_id), &e).await?;
                    still_failing.push(envelope.aggregate_id);
                }
            }
        }
    }
    let unparked = sqlx::query(&format!(
        "DELETE FROM outbox_parked_aggregates p
          WHERE NOT EXISTS (SELECT 1 FROM outbox_events e WHERE {} = p.aggregate_id AND e.status = 'failed')",
        mark::park_key_sql("e.aggregate_id")
    ))
    .execute(&pool)
    .await?
    .rows_affected();
    println!(
        "republished {sent} events; {unparked} aggregates unparked; {} still failing",
        still_failing.len()
    );
    if !still_failing.is_empty() {
        bail!("{} aggregates still have failed events", still_failing.len());
    }
    Ok(())
}

/// Drops the slot (refuses while a relay streams from it).
pub async fn drop_slot(database_url: &str, slot: &str) -> anyhow::Result<()> {
    let pool = checks::connect(database_url, 1).await?;
    let active: Option<bool> =
        sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(&pool)
            .await?;
    match active {
        None => println!("slot {slot} does not exist"),
        Some(true) => bail!("slot {slot} is in use by a running relay: stop it first"),
        Some(false) => {
            sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(slot)
                .execute(&pool)
                .await?;
            sqlx::query("DELETE FROM outbox_relay_slots WHERE slot_name = $1")
                .bind(slot)
                .execute(&pool)
                .await?;
            println!("dropped slot {slot}");
        }
    }
    Ok(())
}
