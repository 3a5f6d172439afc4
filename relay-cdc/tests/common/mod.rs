//! Shared pieces of the relay's integration tests: a relay child process (the real binary, so
//! tests can kill -9 it) and a test database with its own slot and topic.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        self.relay_as(&self.db.url, extra)
    }

    /// Like [`Fixture::relay`], connecting with `database_url` (another role, say).
    pub fn relay_as(&self, database_url: &str, extra: &[&str]) -> Relay {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(&self.slot)));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
            .arg("run")
            .args(["--database-url", database_url])
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

    /// Waits until the slot is confirmed to within 64 KiB of the end of the WAL.
    pub async fn wait_slot_caught_up(&self) {
        wait_until(Duration::from_secs(60), "slot confirmed to the end of the WAL", || async {
            let behind: Option<i64> = sqlx::query_scalar(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .fetch_one(&self.db.pool)
            .await?;
            Ok(behind.is_some_and(|b| b < 64 * 1024))
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

/// Writes `txns` transactions of `per_txn` events, round-robin over `aggregates` aggregates,
/// each event carrying its per-aggregate sequence number.
pub fn spawn_writer(
    pool: PgPool,
    txns: i64,
    per_txn: i64,
    aggregates: i64,
    pause: Duration,
) -> tokio::task::JoinHandle<i64> {
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn(write_transactions(pool, txns, per_txn, aggregates, pause, stop))
}

/// Like [`spawn_writer`], without a count: writes until `stop` is set (then finishes the
/// transaction it is in). Returns the number of transactions written.
pub fn spawn_writer_until(
    pool: PgPool,
    per_txn: i64,
    aggregates: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(write_transactions(
        pool,
        i64::MAX,
        per_txn,
        aggregates,
        pause,
        stop,
    ))
}

async fn write_transactions(
    pool: PgPool,
    txns: i64,
    per_txn: i64,
    aggregates: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> i64 {
    let mut t = 0;
    while t < txns && !stop.load(Ordering::Relaxed) {
        let agg = format!("agg-{}", t % aggregates);
        let from = (t / aggregates) * per_txn;
        loop {
            let r = sqlx::query(
                "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
                 SELECT 'test.event', 'game', $1, jsonb_build_object('seq', s, 'pad', repeat('x', 150)), $1 || '-' || s
                   FROM generate_series($2::bigint, $2::bigint + $3::bigint - 1) s",
            )
            .bind(&agg)
            .bind(from)
            .bind(per_txn)
            .execute(&pool)
            .await;
            match r {
                Ok(_) => break,
                // The server may be restarting under the test: retry the same transaction.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        t += 1;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    t
}

/// Every row is in Kafka (set equality) and per-aggregate order holds for first deliveries.
/// Returns the number of duplicate records.
pub fn assert_delivered(f: &Fixture, rows: &[String]) -> usize {
    let records = f.records();
    let ids: Vec<String> = records.iter().map(outbox::testkit::event_id).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    let expected: HashSet<&String> = rows.iter().collect();
    let missing: Vec<_> = expected.difference(&unique).take(5).collect();
    let extra: Vec<_> = unique.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    // Order per aggregate: a first delivery never comes after a later event's first delivery.
    let mut ordered = records.clone();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in &ordered {
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        if !seen.insert(v["id"].as_str().unwrap().to_string()) {
            continue;
        }
        let seq = v["payload"]["seq"].as_i64().unwrap();
        if let Some(prev) = last.insert(r.key.clone(), seq) {
            assert!(
                seq > prev,
                "aggregate {}: seq {seq} first delivered after {prev}",
                r.key
            );
        }
    }
    ids.len() - unique.len()
}

pub async fn raise_topic_limit(bootstrap: &str, topic: &str, bytes: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", bytes)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// GET `path` from `addr`; returns (status code, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The address the relay's log says it serves /metrics on.
pub fn metrics_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    let at = line.find("127.0.0.1:")?;
    Some(
        line[at..]
            .split(|c: char| c.is_whitespace() || c == '\u{1b}')
            .next()?
            .to_string(),
    )
}

pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
}
