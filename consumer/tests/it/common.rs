//! Helpers shared by the consumer's integration tests: events and workloads with a known ground
//! truth, kcat as the producer, the consumer in-process or as a child process, and queries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use consumer::metrics::Metrics;
use consumer::{KafkaArgs, RunConfig, Service};
use outbox::Envelope;
use outbox::testkit::{self, TestDb};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A broker-side session timeout short enough that a killed consumer's partitions move on quickly.
pub const KAFKA_TEST_CONFIG: &str = "session.timeout.ms=6000";

pub fn config(database_url: &str, topic: &str, group: &str) -> RunConfig {
    RunConfig {
        database_url: database_url.to_string(),
        kafka: kafka_args(topic, group),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        max_attempts: 3,
        batch_size: 500,
        apply_concurrency: 2,
        batch_linger_ms: 20,
        metrics_log_secs: 1,
    }
}

pub fn kafka_args(topic: &str, group: &str) -> KafkaArgs {
    KafkaArgs {
        kafka_bootstrap_servers: testkit::kafka_bootstrap(),
        kafka_topic: topic.to_string(),
        kafka_consumer_group: group.to_string(),
        kafka_config: KAFKA_TEST_CONFIG.parse().unwrap(),
    }
}

/// A consumer running in this process.
pub struct Running {
    pub metrics: Metrics,
    pub metrics_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(cfg: RunConfig) -> anyhow::Result<Self> {
        let service = Service::start(cfg).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = service.metrics();
        let metrics_addr = service.metrics_addr();
        let task = tokio::spawn(service.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            metrics,
            metrics_addr,
            stop,
            task,
        })
    }

    /// Waits until `n` messages are decided (ok, skipped, duplicate or dlq).
    pub async fn wait_handled(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let m = self.metrics.clone();
        testkit::wait_until(timeout, &format!("{n} messages handled"), || {
            let t = m.totals();
            async move { Ok(t.handled() >= n) }
        })
        .await
        .with_context(|| format!("totals: {:?}", self.metrics.totals()))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("consumer task panicked");
    }
}

pub fn envelope(event_type: &str, aggregate_id: &str, payload: Value) -> Envelope {
    Envelope {
        id: Uuid::new_v4(),
        event_type: event_type.into(),
        aggregate_type: "game".into(),
        aggregate_id: aggregate_id.into(),
        payload,
        created_at: Utc::now(),
        idempotency_key: Some(format!("{aggregate_id}:{event_type}:{}", Uuid::new_v4())),
    }
}

/// A `game.finished` event; `standings` are (player_id, name), the first one wins.
pub fn game_finished(game_id: &str, standings: &[(&str, &str)]) -> Envelope {
    let s: Vec<Value> = standings
        .iter()
        .enumerate()
        .map(|(i, (id, name))| json!({"player_id": id, "name": name, "coins": 100 - i as i64, "rank": i + 1}))
        .collect();
    let mut payload = json!({"game_id": game_id, "chat_id": -5056821738i64, "standings": s});
    if let Some((winner, _)) = standings.first() {
        payload["winner_id"] = json!(winner);
    }
    envelope("game.finished", game_id, payload)
}

/// A Kafka record as kcat writes it: key and value.
pub type Record = (String, String);

pub fn record(e: &Envelope) -> Record {
    (e.aggregate_id.clone(), String::from_utf8(e.to_json()).unwrap())
}

/// Writes the records in order with kcat (an independent client), one line each.
pub fn kcat_produce(topic: &str, records: &[Record]) -> anyhow::Result<()> {
    let mut child = Command::new("kcat")
        .args(["-P", "-b", &testkit::kafka_bootstrap(), "-t", topic, "-K", "\t"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kcat")?;
    let mut stdin = child.stdin.take().unwrap();
    for (k, v) in records {
        assert!(
            !v.contains(['\n', '\t']) && !k.contains(['\n', '\t']),
            "kcat lines: {k:?} {v:?}"
        );
        writeln!(stdin, "{k}\t{v}")?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kcat -P failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Writes the records in chunks, pausing between them, from a blocking task: a stream that
/// keeps arriving while the test does something else.
pub fn kcat_trickle(
    topic: &str,
    records: Vec<Record>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        for c in records.chunks(chunk) {
            kcat_produce(&topic, c).expect("kcat produce");
            std::thread::sleep(pause);
        }
    })
}

/// Finished games with a known outcome, some of them delivered twice.
pub struct Workload {
    pub records: Vec<Record>,
    pub ids: BTreeSet<Uuid>,
    pub games: i64,
    /// player_id -> (games, wins)
    pub players: BTreeMap<String, (i64, i64)>,
}

impl Workload {
    /// `games` finished games of 2 to 4 players out of 40; every `dup_every`-th event is
    /// delivered a second time a few records later.
    pub fn new(games: usize, dup_every: usize, seed: u64) -> Self {
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut w = Workload {
            records: Vec::new(),
            ids: BTreeSet::new(),
            games: games as i64,
            players: BTreeMap::new(),
        };
        let mut later: Vec<(usize, Record)> = Vec::new();
        let run = Uuid::new_v4().simple().to_string();
        for g in 0..games {
            let n = 2 + (next() % 3) as usize;
            let mut seats: Vec<String> = Vec::new();
            while seats.len() < n {
                let p = format!("p{}", next() % 40);
                if !seats.contains(&p) {
                    seats.push(p);
                }
            }
            let standings: Vec<(&str, String)> = seats
                .iter()
                .map(|p| (p.as_str(), format!("Player {p}")))
                .collect();
            let refs: Vec<(&str, &str)> = standings.iter().map(|(p, n)| (*p, n.as_str())).collect();
            let e = game_finished(&format!("{run}-g{g}"), &refs);
            for (i, p) in seats.iter().enumerate() {
                let entry = w.players.entry(p.clone()).or_default();
                entry.0 += 1;
                entry.1 += i64::from(i == 0);
            }
            w.ids.insert(e.id);
            w.records.push(record(&e));
            if dup_every > 0 && g % dup_every == 0 {
                later.push((g + 5, record(&e)));
            }
            let (due, rest): (Vec<_>, Vec<_>) = later.into_iter().partition(|(at, _)| *at <= g);
            w.records.extend(due.into_iter().map(|(_, r)| r));
            later = rest;
        }
        w.records.extend(later.into_iter().map(|(_, r)| r));
        w
    }

    pub fn leaderboard(&self) -> Vec<(String, i64, i64)> {
        self.players
            .iter()
            .map(|(p, (g, w))| (p.clone(), *g, *w))
            .collect()
    }
}

/// (player_id, games, wins) by player id.
pub async fn leaderboard(pool: &PgPool) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT player_id, games::int8, wins::int8 FROM leaderboard ORDER BY player_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Checks every effect against the workload: one consumed_events row per event id, each game
/// once, each player's games and wins.
pub async fn assert_ground_truth(pool: &PgPool, w: &Workload) {
    let ids: BTreeSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM consumed_events WHERE result = 'ok'")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, w.ids, "consumed_events rows differ from the events sent");
    assert_eq!(
        count(pool, "SELECT count(*) FROM consumed_events").await,
        w.ids.len() as i64
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM leaderboard_games").await,
        w.games
    );
    assert_eq!(leaderboard(pool).await, w.leaderboard());
}

/// A plain HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let status = buf.split(' ').nth(1).context("no status")?.parse()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `consumer` binary as a child process, configured through its environment variables.
pub struct Child {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Child {
    pub fn spawn(db: &TestDb, topic: &str, group: &str, log_name: &str) -> Self {
        let log = std::env::temp_dir().join(format!("{log_name}-{}.log", Uuid::new_v4().simple()));
        let child = Command::new(env!("CARGO_BIN_EXE_consumer"))
            .arg("run")
            .env("DATABASE_URL", &db.url)
            .env("KAFKA_BOOTSTRAP_SERVERS", testkit::kafka_bootstrap())
            .env("KAFKA_TOPIC", topic)
            .env("KAFKA_CONSUMER_GROUP", group)
            .env("CONSUMER_METRICS_ADDR", "127.0.0.1:0")
            .env("CONSUMER_BATCH_SIZE", "500")
            .env("CONSUMER_METRICS_LOG_SECS", "1")
            .env("CONSUMER_KAFKA_CONFIG", KAFKA_TEST_CONFIG)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the consumer binary");
        Self { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the exit and returns its status.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer did not exit within {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
