//! Retention: deletes `sent` rows older than `RELAY_RETAIN_SENT`, so the outbox does not grow
//! forever.
//!
//! Off the hot path: its own task and its own connection, only while this instance leads (the
//! standby never deletes), in small batches at a bounded rate. Each batch is one short
//! autocommit statement that locks only the rows it deletes (`FOR UPDATE SKIP LOCKED`: a row
//! the marker or `republish` holds is left for the next round), so no lock is held for long and
//! the WAL it writes is spread out. Rows are found through the `created_at` index: age counts
//! from the insert, and no index is added on the columns marking updates (that would make every
//! mark a non-HOT update). Dead tuples left behind are ordinary autovacuum work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use prometheus::IntCounter;
use sqlx::PgPool;

use crate::checks;
use crate::metrics::Metrics;

/// `relay-cdc run`'s retention settings.
#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    /// Delete `sent` rows created longer ago than this: `7d`, `12h`, `30m`, `90s`, or `off`
    /// (keep every row).
    #[arg(long, env = "RELAY_RETAIN_SENT", default_value = "off", value_parser = parse_retain)]
    pub retain_sent: Retain,
    /// Retention: rows deleted per statement.
    #[arg(long, env = "RELAY_RETAIN_BATCH", default_value_t = 1_000)]
    pub retain_batch: u32,
    /// Retention: at most this many rows deleted per second (bounds its WAL and I/O).
    #[arg(long, env = "RELAY_RETAIN_RATE", default_value_t = 20_000)]
    pub retain_rate: u32,
    /// Retention: pause between rounds once no old sent row is left.
    #[arg(long, env = "RELAY_RETAIN_INTERVAL_SECS", default_value_t = 60)]
    pub retain_interval_secs: u64,
}

/// How long `sent` rows are kept; `None` keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retain(pub Option<Duration>);

/// Parses `RELAY_RETAIN_SENT`: a whole number with a unit (`s`, `m`, `h`, `d`, `w`), or `off`.
pub fn parse_retain(s: &str) -> Result<Retain, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(Retain(None));
    }
    let bad = || {
        format!("`{s}` is not a retention: give a whole number and a unit (7d, 12h, 30m, 90s, 2w), or `off`")
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!(
            "`{s}`: a retention of zero would delete rows as soon as they are sent; use `off` to keep every row, or at least 1s"
        ));
    }
    Ok(Retain(Some(Duration::from_secs(n.saturating_mul(secs)))))
}

/// Deletes up to `batch` `sent` rows created more than `older_than` ago and not before `from`;
/// returns how many, and the newest `created_at` among them (where the next batch starts).
///
/// Starting each batch where the last one ended keeps a pass from walking, batch after batch,
/// over the index entries of the rows it has just deleted (they stay until vacuum).
pub async fn delete_batch(
    pool: &PgPool,
    older_than: Duration,
    batch: u32,
    from: Option<DateTime<Utc>>,
) -> sqlx::Result<(u64, Option<DateTime<Utc>>)> {
    // ctid = ANY(ARRAY(...)) is a TID scan: the delete touches exactly the rows the sub-select
    // locked, nothing else.
    let deleted: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "DELETE FROM outbox_events
          WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM outbox_events
                 WHERE created_at < now() - make_interval(secs => $1)
                   AND created_at >= coalesce($3, '-infinity')
                   AND status = 'sent'
                 ORDER BY created_at
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED))
      RETURNING created_at",
    )
    .bind(older_than.as_secs_f64())
    .bind(i64::from(batch))
    .bind(from)
    .fetch_all(pool)
    .await?;
    Ok((deleted.len() as u64, deleted.into_iter().max().or(from)))
}

/// Starts the retention task when `RELAY_RETAIN_SENT` is set; it deletes only while this
/// instance leads (`metrics.leader`).
pub fn spawn(database_url: &str, args: &RetentionArgs, metrics: &Metrics) {
    let Retain(Some(older_than)) = args.retain_sent else {
        return;
    };
    let deleted = IntCounter::new(
        "outbox_relay_rows_retention_deleted_total",
        "Sent rows deleted by retention (RELAY_RETAIN_SENT)",
    )
    .unwrap();
    let _ = metrics.registry.register(Box::new(deleted.clone()));
    let url = database_url.to_owned();
    let batch = args.retain_batch.max(1);
    // Pause after a full batch so the rate stays under RELAY_RETAIN_RATE.
    let pace = Duration::from_secs_f64(f64::from(batch) / f64::from(args.retain_rate.max(1)));
    let idle = Duration::from_secs(args.retain_interval_secs.max(1));
    let leader = metrics.leader.clone();
    tracing::info!(retain = ?older_than, batch, rate = args.retain_rate, "retention of sent rows on");
    tokio::spawn(async move {
        let mut pool: Option<PgPool> = None;
        let mut from = None;
        loop {
            if leader.get() != 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if pool.is_none() {
                match checks::connect(&url, 1).await {
                    Ok(p) => pool = Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "retention cannot connect; retrying");
                        tokio::time::sleep(idle).await;
                        continue;
                    }
                }
            }
            let p = pool.as_ref().expect("connected above");
            match delete_batch(p, older_than, batch, from).await {
                Ok((n, next)) => {
                    deleted.inc_by(n);
                    if n > 0 {
                        tracing::debug!(rows = n, "retention deleted sent rows");
                    }
                    if n < u64::from(batch) {
                        // The pass is done; the next one starts from the oldest row again
                        // (rows sent late, after a republish, are older than the cursor).
                        from = None;
                        tokio::time::sleep(idle).await;
                    } else {
                        from = next;
                        tokio::time::sleep(pace).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention: deleting sent rows failed; retrying later");
                    tokio::time::sleep(idle).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_units_and_off() {
        assert_eq!(
            parse_retain("7d"),
            Ok(Retain(Some(Duration::from_secs(7 * 86_400))))
        );
        assert_eq!(parse_retain("12h"), Ok(Retain(Some(Duration::from_secs(43_200)))));
        assert_eq!(parse_retain("30m"), Ok(Retain(Some(Duration::from_secs(1_800)))));
        assert_eq!(parse_retain("90s"), Ok(Retain(Some(Duration::from_secs(90)))));
        assert_eq!(
            parse_retain("2w"),
            Ok(Retain(Some(Duration::from_secs(1_209_600))))
        );
        assert_eq!(parse_retain("OFF"), Ok(Retain(None)));
    }

    #[test]
    fn bad_retention_says_what_is_expected() {
        for bad in ["", "7", "d", "7 days", "1.5h", "-1d", "7y"] {
            let e = parse_retain(bad).unwrap_err();
            assert!(e.contains("7d, 12h, 30m, 90s"), "{bad}: {e}");
        }
        assert!(parse_retain("0d").unwrap_err().contains("use `off`"));
    }
}
