//! Starting in a bad spot: Kafka unreachable, a slot whose creation waits behind a long
//! transaction. The relay must say what it waits for, in few lines, and not be ready.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::report::case;

/// Kafka unreachable for 20 s at start: a few lines, naming the bootstrap servers, with the
/// count of the lines held back (issue: 1 274 lines in 40 s).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_unreachable_at_start_logs_few_lines() {
    case("start-kafka-unreachable", async {
        let mut f = Fixture::new(1).await;
        f.kafka = "127.0.0.1:1".to_string();
        let mut relay = f.relay(&[]);
        tokio::time::sleep(Duration::from_secs(20)).await;
        relay.kill9();
        let log = relay.log_text();
        let kafka_lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Kafka") || l.contains("librdkafka"))
            .collect();
        anyhow::ensure!(!kafka_lines.is_empty(), "nothing said about Kafka:\n{log}");
        anyhow::ensure!(
            kafka_lines.iter().all(|l| l.contains("127.0.0.1:1")),
            "a line without the servers:\n{}",
            kafka_lines.join("\n")
        );
        anyhow::ensure!(
            kafka_lines.len() <= 12,
            "{} Kafka lines in 20 s",
            kafka_lines.len()
        );
        anyhow::ensure!(log.contains("suppressed"), "no count of held-back lines");
        Ok(format!(
            "{} Kafka lines in 20 s ({} lines in all), each naming 127.0.0.1:1, with suppressed counts",
            kafka_lines.len(),
            log.lines().count()
        ))
    })
    .await;
}

/// A first start while another session holds a transaction open: the slot's creation waits
/// for it; the relay names it (pid, age, query) every few seconds and is not ready; once it
/// ends, the relay streams.
#[tokio::test(flavor = "multi_thread")]
async fn first_start_behind_a_long_transaction_names_it() {
    case("start-behind-open-transaction", async {
        let f = Fixture::new(1).await;
        let mut blocker = f.db.pool.begin().await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *blocker)
            .await?;
        sqlx::query("INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id) VALUES ('x', 'game', 'held')")
            .execute(&mut *blocker)
            .await?;
        let relay = f.relay(&[]);
        let started = Instant::now();
        let mut named = None;
        while started.elapsed() < Duration::from_secs(40) {
            let log = relay.log_text();
            if let Some(line) = log.lines().find(|l| l.contains(&format!("the oldest is pid {pid}"))) {
                named = Some(line.to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let named_after = started.elapsed();
        let line = named.ok_or_else(|| anyhow::anyhow!("pid {pid} never named:\n{}", relay.log_text()))?;
        anyhow::ensure!(line.contains("INSERT INTO outbox_events"), "no query: {line}");
        let addr = metrics_addr(&relay.log_text()).ok_or_else(|| anyhow::anyhow!("no metrics address"))?;
        let (status, _) = http_get(&addr, "/readyz").await;
        anyhow::ensure!(status != 200, "ready while the slot is not created");
        blocker.commit().await?;
        f.insert("after", 0, 1).await;
        f.wait_all_sent(Duration::from_secs(60)).await;
        let (status, _) = http_get(&addr, "/readyz").await;
        anyhow::ensure!(status == 200, "not ready after the slot was created: {status}");
        drop(relay);
        Ok(format!(
            "named the open transaction (pid, age, query) {:.1} s after start, /readyz 503 meanwhile; after its commit both rows sent and ready",
            named_after.as_secs_f64()
        ))
    })
    .await;
}
