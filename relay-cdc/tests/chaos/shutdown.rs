//! SIGTERM while events are still in flight: the relay waits on events (no busy loop), logs a
//! few lines, and stops within its drain timeout whatever holds the drain up.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::report::case;

/// CPU time (user + system) the process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Sends SIGTERM and waits for the exit; returns (time to stop, CPU used meanwhile, status).
fn terminate_measured(relay: &mut Relay) -> (Duration, Duration, std::process::ExitStatus) {
    let pid = relay.child.id();
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    // Sample the CPU time while it drains (the process is gone once it exits).
    let mut cpu = Duration::ZERO;
    loop {
        if let Some(status) = relay.child.try_wait().unwrap() {
            return (started.elapsed(), cpu, status);
        }
        cpu = cpu_time(pid).saturating_sub(cpu_before);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines_after(log: &str, marker: usize) -> usize {
    log.lines().count().saturating_sub(marker)
}

/// The repro: a row inserted and deleted in one transaction, then SIGTERM. The relay
/// publishes it but can never mark it; before the fix its drain loop spun on the closed
/// shutdown channel (millions of "draining" lines, a full core).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_row_that_cannot_be_marked() {
    case("shutdown-deleted-row", async {
        let f = Fixture::new(1).await;
        let mut relay = f.relay(&[]);
        f.insert("warm-up", 0, 1).await;
        f.wait_all_sent(Duration::from_secs(60)).await;
        let id = uuid::Uuid::new_v4();
        let mut tx = f.db.pool.begin().await?;
        sqlx::query("INSERT INTO outbox_events (id, event_type, aggregate_type, aggregate_id) VALUES ($1, 'x', 'game', 'gone')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM outbox_events WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Wait until Kafka has it: the relay is now waiting to mark a row that is gone.
        f.wait_records(2).await;
        let before = relay.log_text().lines().count();
        let (took, cpu, status) = terminate_measured(&mut relay);
        let lines = lines_after(&relay.log_text(), before);
        anyhow::ensure!(status.success(), "exit status {status:?}");
        anyhow::ensure!(took < Duration::from_secs(9), "took {took:?} to stop");
        anyhow::ensure!(lines <= 10, "{lines} log lines while stopping");
        anyhow::ensure!(cpu < Duration::from_secs(1), "{cpu:?} of CPU while draining");
        Ok(format!(
            "stopped in {:.1} s (exit 0), {lines} log lines and {} ms of CPU while draining",
            took.as_secs_f64(),
            cpu.as_millis()
        ))
    })
    .await;
}

/// Marking rows `sent` fails (a trigger refuses every UPDATE): the marker retries, logging at
/// most a line per 5 s with the count of the others; SIGTERM stops it within the drain timeout;
/// once the trigger is gone a new relay sends every row (nothing lost).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_marking_retries() {
    case("shutdown-mark-retrying", async {
        let f = Fixture::new(1).await;
        sqlx::raw_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'marks refused by the test'; END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON outbox_events FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .execute(&f.db.pool)
        .await?;
        let mut relay = f.relay(&[]);
        f.insert("agg", 0, 50).await;
        f.wait_records(50).await;
        let retrying = Instant::now();
        tokio::time::sleep(Duration::from_secs(15)).await;
        let log = relay.log_text();
        let retry_lines = log.lines().filter(|l| l.contains("marking rows sent failed")).count();
        let before = log.lines().count();
        let window = retrying.elapsed();
        let (took, cpu, status) = terminate_measured(&mut relay);
        let stop_lines = lines_after(&relay.log_text(), before);
        anyhow::ensure!(status.success(), "exit status {status:?}");
        anyhow::ensure!(took < Duration::from_secs(9), "took {took:?} to stop");
        anyhow::ensure!(
            (1..=6).contains(&retry_lines),
            "{retry_lines} retry lines in {window:?}"
        );
        anyhow::ensure!(stop_lines <= 10, "{stop_lines} log lines while stopping");
        anyhow::ensure!(f.count("sent").await == 0, "no row can be marked yet");
        sqlx::query("DROP TRIGGER refuse ON outbox_events")
            .execute(&f.db.pool)
            .await?;
        let relay = f.relay(&[]);
        f.wait_all_sent(Duration::from_secs(60)).await;
        drop(relay);
        Ok(format!(
            "{retry_lines} 'marking rows sent failed' lines in {:.0} s of retrying; SIGTERM: stopped in {:.1} s, {stop_lines} lines, {} ms CPU; after the trigger was dropped a new relay marked all 50 sent",
            window.as_secs_f64(),
            took.as_secs_f64(),
            cpu.as_millis()
        ))
    })
    .await;
}
