//! Shared pieces of the relay's integration tests: a relay child process (the real binary, so
//! tests can kill -9 it) and a test database with its own slot and topic.

#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outbox::testkit::{TestDb, create_topic_at, database_url, kafka_bootstrap, unique_name, wait_until};

/// A database, a slot name and a topic private to one test. Dropping it drops the slot (slots
/// pin WAL on the shared server).
pub struct Fixture {
    pub db: TestDb,
    pub slot: String,
    pub topic: String,
    pub kafka: String,
}

impl Fixture {
    /// On the shared services.
    pub async fn new(partitions: i32) -> Self {
        Self::on(&database_url(), &kafka_bootstrap(), partitions, &[]).await
    }

    /// On the cluster of `pg_url` and the broker at `kafka`, with topic configs.
    pub async fn on(pg_url: &str, kafka: &str, partitions: i32, topic_configs: &[(&str, &str)]) -> Self {
        let db = TestDb::create_in(pg_url).await.unwrap();
        let topic = create_topic_at(kafka, "relay", partitions, topic_configs)
            .await
            .unwrap();
        Self {
            db,
            slot: unique_name("slot"),
            topic,
            kafka: kafka.to_string(),
        }
    }

    /// Every record in the topic, read by kcat.
    pub fn records(&self) -> Vec<outbox::testkit::KcatRecord> {
        outbox::testkit::kcat_read_all_from(&self.kafka, &self.topic).unwrap()
    }

    /// Waits until the topic holds at least `n` records and returns them all.
    pub async fn wait_records(&self, n: usize) -> Vec<outbox::testkit::KcatRecord> {
        let mut last = Vec::new();
        for _ in 0..300 {
            last = self.records();
            if last.len() >= n {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("expected {n} records in {}, found {}", self.topic, last.len());
    }

    /// Starts `relay-cdc run` for this fixture, with extra `--flag value` arguments.
    pub fn relay(&self, extra: &[&str]) -> Relay {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(&self.slot)));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
            .arg("run")
            .args(["--database-url", &self.db.url])
            .args(["--slot-name", &self.slot])
            .args(["--kafka-bootstrap-servers", &self.kafka])
            .args(["--kafka-topic", &self.topic])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info,relay_cdc=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Relay { child, log }
    }

    /// Inserts `n` outbox rows for `aggregate` in one transaction; payload carries `seq`.
    pub async fn insert(&self, aggregate: &str, from: i64, n: i64) {
        sqlx::query(
            "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
             SELECT 'test.event', 'game', $1, jsonb_build_object('seq', s, 'pad', repeat('x', 150)), $1 || '-' || s
               FROM generate_series($2::bigint, $2::bigint + $3::bigint - 1) s",
        )
        .bind(aggregate)
        .bind(from)
        .bind(n)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub async fn count(&self, status: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status = $1")
            .bind(status)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Event ids in the topic (with duplicates).
    pub fn kafka_ids(&self) -> Vec<String> {
        self.records().iter().map(outbox::testkit::event_id).collect()
    }

    pub async fn row_ids(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT id::text FROM outbox_events")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    /// Waits until every row is `sent`.
    pub async fn wait_all_sent(&self, timeout: Duration) {
        wait_until(timeout, "every outbox row sent", || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status <> 'sent'")
                .fetch_one(&self.db.pool)
                .await?;
            Ok(left == 0)
        })
        .await
        .unwrap();
    }

    /// The slot's confirmed flush LSN and the server's current WAL LSN.
    pub async fn slot_position(&self) -> (Option<String>, String) {
        sqlx::query_as(
            "SELECT (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1), pg_current_wal_lsn()::text",
        )
        .bind(&self.slot)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        outbox::testkit::drop_slot(&self.db.url, &self.slot);
    }
}

/// A running relay process, killed (SIGKILL) when dropped.
pub struct Relay {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Relay {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- relay log {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}
