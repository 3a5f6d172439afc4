//! Crashes, outages and shutdown: effects always match the ground truth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use outbox::testkit::{self, TestDb};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

use crate::common::*;

const T: Duration = Duration::from_secs(90);

async fn wait_rows(pool: &PgPool, at_least: i64, timeout: Duration) {
    let pool = pool.clone();
    testkit::wait_until(timeout, &format!("{at_least} consumed_events rows"), || {
        let pool = pool.clone();
        async move { Ok(count(&pool, "SELECT count(*) FROM consumed_events").await >= at_least) }
    })
    .await
    .unwrap();
}

/// Effects of a committed prefix: every recorded game counted for each of its players, no more.
async fn assert_consistent(pool: &PgPool) {
    let (games, events, seats, played): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM leaderboard_games),
                (SELECT count(*) FROM consumed_events WHERE result = 'ok'),
                (SELECT coalesce(sum(players), 0)::int8 FROM leaderboard_games),
                (SELECT coalesce(sum(games_played), 0)::int8 FROM leaderboard_players)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(games, events, "a game per applied event");
    assert_eq!(seats, played, "each game counted once for each of its players");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_batch_then_restart_matches_the_ground_truth() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("kill", 3).await.unwrap();
    let w = Workload::new(20_000, 10, 3);
    kcat_produce(&topic, &w.records).unwrap();
    let unique = w.ids.len() as i64;

    let mut first = Child::spawn(&db, &topic, "kill", "consumer-kill-1");
    wait_rows(&db.pool, 3000, T).await;
    // Hold the consumer inside a batch: its transaction has recorded events and now waits for
    // this lock. Waiting past the auto-commit interval (1 s) means an offset stored too early
    // would be committed by the time of the kill.
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE leaderboard_players IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let name = db.name.clone();
    testkit::wait_until(T, "the consumer's transaction to wait for the lock", || {
        let (pool, name) = (pool.clone(), name.clone());
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(name)
            .fetch_one(&pool)
            .await?;
            Ok(waiting >= 1)
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.child.kill().unwrap();
    first.wait(Duration::from_secs(10)).await;
    lock.rollback().await.unwrap();

    let at_kill = count(&db.pool, "SELECT count(*) FROM consumed_events").await;
    assert!(
        at_kill < unique,
        "the consumer finished before the kill: nothing was tested"
    );
    // The batch in flight left nothing behind.
    assert_consistent(&db.pool).await;

    let mut second = Child::spawn(&db, &topic, "kill", "consumer-kill-2");
    wait_rows(&db.pool, unique, T).await;
    second.sigterm();
    assert!(second.wait(Duration::from_secs(30)).await.success());
    assert_ground_truth(&db.pool, &w).await;
}

/// The last `[metrics] ok=.. dup=.. dlq=.. retry=..` line of a log.
fn last_metrics_line(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| l.find("[metrics] ").map(|i| l[i..].to_string()))
        .next_back()
}

fn metrics_field(line: &str, name: &str) -> u64 {
    line.split(' ')
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing in {line}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_commits_offsets_and_exits_cleanly() {
    let db = TestDb::new().await.unwrap();
    let topic = testkit::create_topic("term", 3).await.unwrap();
    let w = Workload::new(2000, 10, 9);
    kcat_produce(&topic, &w.records).unwrap();
    let (n, unique) = (w.records.len() as u64, w.ids.len() as u64);

    let mut child = Child::spawn(&db, &topic, "term", "consumer-term");
    testkit::wait_until(T, "the periodic [metrics] line to count every message", || {
        let line = last_metrics_line(&child.log_text());
        async move { Ok(line.is_some_and(|l| metrics_field(&l, "ok") + metrics_field(&l, "dup") == n)) }
    })
    .await
    .unwrap();
    child.sigterm();
    let status = child.wait(Duration::from_secs(30)).await;
    let log = child.log_text();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(log.contains("consumer stopped"), "{log}");
    assert_eq!(
        last_metrics_line(&log).unwrap(),
        format!("[metrics] ok={unique} dup={} dlq=0 retry=0", n - unique)
    );
    assert_ground_truth(&db.pool, &w).await;

    // The group's committed offsets are at the end of every partition.
    let kafka: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_bootstrap())
        .set("group.id", "term")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topic, p);
    }
    let committed = kafka.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for e in committed.elements() {
        let (_, high) = kafka
            .fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(e.offset(), Offset::Offset(high), "partition {}", e.partition());
    }
}

/// A PostgreSQL cluster of this test only (`scripts/services pg-up` in a private folder and
/// port): stopping the shared one would break everyone else's tests.
struct PrivatePg {
    dir: PathBuf,
    port: u16,
}

fn services(dir: &Path, port: u16, command: &str) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services"))
        .arg(command)
        .env("OUTBOX_SERVICES_DIR", dir)
        .env("OUTBOX_PG_PORT", port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/services {command}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePg {
    async fn start() -> Self {
        // A free port in 55500..56000 (the script refuses a taken one).
        let port = loop {
            let p = 55_500 + (Uuid::new_v4().as_u128() % 500) as u16;
            if std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                break p;
            }
        };
        let pg = Self {
            dir: std::env::temp_dir().join(format!("consumer-pg-{}", Uuid::new_v4().simple())),
            port,
        };
        pg.services("pg-up").await;
        pg
    }

    async fn services(&self, command: &'static str) {
        let (dir, port) = (self.dir.clone(), self.port);
        tokio::task::spawn_blocking(move || services(&dir, port, command))
            .await
            .unwrap();
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/bot_game_test",
            self.port
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        services(&self.dir, self.port, "pg-down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_is_retried_and_nothing_is_skipped_or_lost() {
    let pg = PrivatePg::start().await;
    outbox::migrate::run_all(&pg.url()).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    let topic = testkit::create_topic("pgdown", 3).await.unwrap();
    let w = Workload::new(3000, 10, 5);
    // About 12 s of traffic: it keeps arriving through the outage.
    let producer = kcat_trickle(&topic, w.records.clone(), 100, Duration::from_millis(300));

    let mut cfg = config(&pg.url(), &topic, "pgdown");
    cfg.batch_size = 200;
    let c = Running::start(cfg).await.unwrap();
    c.wait_handled(300, T).await.unwrap();
    pool.close().await;

    pg.services("pg-down").await;
    let addr = c.metrics_addr;
    testkit::wait_until(
        Duration::from_secs(9),
        "/readyz to report the outage",
        || async move { Ok(http_get(addr, "/readyz").await?.0 == 503) },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = c.metrics.totals();
    assert!(during.retried > 0, "{during:?}");
    pg.services("pg-up").await;

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    wait_rows(&pool, w.ids.len() as i64, T).await;
    producer.await.unwrap();
    assert_eq!(http_get(addr, "/readyz").await.unwrap().0, 200);
    c.stop().await;
    assert_ground_truth(&pool, &w).await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_schema_stops_the_start_with_one_line_naming_the_fix() {
    let base: PgConnectOptions = testkit::database_url().parse().unwrap();
    let name = testkit::unique_name("empty");
    let mut admin = base.connect().await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = base.clone().database(&name).to_url_lossy().to_string();
    let consumer = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_consumer"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("KAFKA_BOOTSTRAP_SERVERS", testkit::kafka_bootstrap())
            .env("CONSUMER_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };

    let out = consumer(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("consumed_events") && stderr.contains("run `consumer migrate`"),
        "{stderr}"
    );

    assert!(consumer(&["migrate"]).status.success());
    let mut conn = base.clone().database(&name).connect().await.unwrap();
    let view: Option<String> = sqlx::query_scalar("SELECT to_regclass('leaderboard')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(view.as_deref(), Some("leaderboard"));
    conn.close().await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
