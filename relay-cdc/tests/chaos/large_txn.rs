//! Transactions far larger than the relay's in-flight bounds: streamed in chunks as they
//! arrive, so memory stays flat, and a kill in the middle loses nothing.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use outbox::testkit::wait_until;

use crate::common::*;
use crate::report::case;

/// One INSERT ... SELECT generate_series of 1M rows through a running relay: peak RSS of the
/// relay process (VmHWM) at most 64 MiB, every row in Kafka exactly once and marked `sent`.
#[tokio::test(flavor = "multi_thread")]
async fn one_million_row_transaction_in_bounded_memory() {
    case("txn-1m-rows-rss", async {
        const ROWS: i64 = 1_000_000;
        let f = Fixture::new(4).await;
        let mut relay = f.relay(&[]);
        wait_streaming(&relay).await?;
        let started = Instant::now();
        insert_big(&f, "big", ROWS).await?;
        let inserted = started.elapsed();
        // Minutes on an idle machine; a debug build on a loaded 2-core machine needs far longer.
        wait_until(Duration::from_secs(3600), "1M rows sent", || async {
            Ok(f.count("sent").await == ROWS)
        })
        .await?;
        let duration = started.elapsed();
        let peak = vm_hwm_kib(relay.child.id())?;
        relay.kill9();
        let (records, ids) = kafka_ids(&f)?;
        ensure!(ids.len() as i64 == ROWS, "{} distinct ids in Kafka, {ROWS} rows", ids.len());
        ensure!(records as i64 == ROWS, "{records} records for {ROWS} rows (duplicates)");
        let rows: HashSet<String> = f.row_ids().await.into_iter().collect();
        ensure!(rows == ids, "the ids in Kafka are not the rows' ids");
        let peak_mib = peak as f64 / 1024.0;
        ensure!(peak_mib <= 64.0, "peak RSS {peak_mib:.1} MiB > 64 MiB");
        Ok(format!(
            "1 000 000-row transaction: relay peak RSS {peak_mib:.1} MiB (VmHWM), insert {:.0} s, insert start to all sent {:.0} s, {records} records, 0 missing, 0 duplicates",
            inserted.as_secs_f64(),
            duration.as_secs_f64()
        ))
    })
    .await;
}

/// `kill -9` while a 200k-row transaction is partly produced: after a restart everything is
/// delivered, and the only duplicates are events of that transaction already in Kafka when
/// the relay was killed.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_in_the_middle_of_a_large_transaction() {
    case("kill9-mid-200k-txn", async {
        const ROWS: i64 = 200_000;
        let f = Fixture::new(4).await;
        let mut relay = f.relay(&[]);
        wait_streaming(&relay).await?;
        f.insert("small-before", 0, 10).await;
        insert_big(&f, "big", ROWS).await?;
        f.insert("small-after", 0, 10).await;
        // Partly produced: some rows sent, far from all.
        wait_until(Duration::from_secs(300), "a part of the transaction sent", || async {
            Ok(f.count("sent").await >= 20_000)
        })
        .await?;
        relay.kill9();
        let sent_at_kill = f.count("sent").await;
        ensure!(sent_at_kill < ROWS, "the whole transaction was sent before the kill");
        let (in_kafka_at_kill, ids_at_kill) = kafka_ids(&f)?;
        let relay = f.relay(&[]);
        f.wait_all_sent(Duration::from_secs(600)).await;
        f.wait_slot_caught_up().await;
        drop(relay);
        let rows = f.row_ids().await;
        ensure!(rows.len() as i64 == ROWS + 20, "{} rows", rows.len());
        let duplicates = assert_delivered(&f, &rows);
        // Which ids were delivered twice: each must have been in Kafka already at the kill.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for id in f.kafka_ids() {
            *seen.entry(id).or_default() += 1;
        }
        let twice: Vec<&String> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
        let outside = twice.iter().filter(|id| !ids_at_kill.contains(**id)).count();
        ensure!(outside == 0, "{outside} duplicated ids were not in Kafka at the kill");
        Ok(format!(
            "200 000-row transaction killed with {sent_at_kill} rows marked sent and {in_kafka_at_kill} records in Kafka: after restart 0 lost, {duplicates} duplicates, all of them events already in Kafka at the kill; order kept, slot confirmed"
        ))
    })
    .await;
}

async fn wait_streaming(relay: &Relay) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(60), "relay streaming", || async {
        Ok(relay.log_text().contains("streaming"))
    })
    .await
}

/// One transaction of `n` rows for `aggregate` (payload carries `seq`).
async fn insert_big(f: &Fixture, aggregate: &str, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
         SELECT 'test.event', 'game', $1, jsonb_build_object('seq', s, 'pad', repeat('x', 100)), $1 || '-' || s
           FROM generate_series(0, $2::bigint - 1) s",
    )
    .bind(aggregate)
    .bind(n)
    .execute(&f.db.pool)
    .await
    .context("inserting the large transaction")?;
    Ok(())
}

/// Peak resident set size of a process (VmHWM), in KiB.
fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// The number of records in the topic and the distinct event ids, read by kcat as a stream of
/// `id` headers (a million records would not fit comfortably as whole values).
fn kafka_ids(f: &Fixture) -> anyhow::Result<(usize, HashSet<String>)> {
    let mut child = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &f.kafka,
            "-t",
            &f.topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-f", "%h\n"])
        .stdout(Stdio::piped())
        .spawn()
        .context("running kcat")?;
    let mut records = 0;
    let mut ids = HashSet::new();
    for line in std::io::BufReader::new(child.stdout.take().context("kcat stdout")?).lines() {
        let line = line?;
        let id = line
            .split(',')
            .find_map(|h| h.strip_prefix("id="))
            .with_context(|| format!("record without an id header: {line}"))?;
        records += 1;
        ids.insert(id.to_string());
    }
    ensure!(child.wait()?.success(), "kcat failed");
    Ok((records, ids))
}
