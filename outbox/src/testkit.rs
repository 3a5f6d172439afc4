//! Harness for integration tests against the real services that `scripts/services up` starts.
//!
//! Every test gets its own freshly migrated database and its own Kafka topics (unique names),
//! so tests run in parallel without seeing each other's rows, slots or messages.
//!
//! The services are found through `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`
//! (`eval "$(scripts/services env)"`). A missing variable fails the test loudly: a test that
//! quietly skips when the services are absent would prove nothing.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

/// The seed's step-4 INSERT, verbatim (also run by scripts/smoke.sh).
pub const SEED_STEP4_INSERT: &str = include_str!("../../scripts/sql/seed-step4-insert.sql");

/// The event id in a record's envelope.
pub fn event_id(record: &KcatRecord) -> String {
    let v: serde_json::Value = serde_json::from_str(&record.value).expect("record value is JSON");
    v["id"].as_str().expect("envelope has an id").to_string()
}

/// The base `DATABASE_URL` of the running cluster.
pub fn database_url() -> String {
    required_env("DATABASE_URL")
}

/// `KAFKA_BOOTSTRAP_SERVERS` of the running broker.
pub fn kafka_bootstrap() -> String {
    required_env("KAFKA_BOOTSTRAP_SERVERS")
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: integration tests need the real services; run scripts/test, \
             or scripts/services up && eval \"$(scripts/services env)\""
        )
    })
}

/// A short unique name, safe as a database, slot or topic name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// A freshly created and migrated database, private to one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `t_<unique>` in the shared cluster and applies every migration.
    pub async fn new() -> anyhow::Result<Self> {
        Self::create_in(&database_url()).await
    }

    /// Creates `t_<unique>` in the cluster of `base_url` (a private one, say) and migrates it.
    pub async fn create_in(base_url: &str) -> anyhow::Result<Self> {
        let db = Self::empty_in(base_url).await?;
        crate::migrate::run_all(&db.url).await?;
        Ok(db)
    }

    /// Creates `t_<unique>` in the shared cluster without migrating it (migration tests).
    pub async fn empty() -> anyhow::Result<Self> {
        Self::empty_in(&database_url()).await
    }

    async fn empty_in(base_url: &str) -> anyhow::Result<Self> {
        let base: PgConnectOptions = base_url.parse().context("parsing the database URL")?;
        let name = unique_name("t");
        let mut admin = base
            .clone()
            .connect()
            .await
            .context("connecting to DATABASE_URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let opts = base.database(&name);
        let url = with_database(base_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .with_context(|| format!("connecting to test database {name}"))?;
        Ok(Self { name, url, pool })
    }
}

/// `base_url` with its database replaced (query string kept). Built by hand: sqlx's
/// `to_url_lossy` leaves the password out, and child processes need it.
fn with_database(base_url: &str, database: &str) -> String {
    let (head, query) = base_url
        .split_once('?')
        .map_or((base_url, None), |(h, q)| (h, Some(q)));
    let authority_end = head.find("://").map_or(0, |i| i + 3);
    let server = match head[authority_end..].find('/') {
        Some(i) => &head[..authority_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// Creates a topic with a unique name (`prefix-<unique>`) and waits until the broker has it.
pub async fn create_topic(prefix: &str, partitions: i32) -> anyhow::Result<String> {
    create_topic_at(&kafka_bootstrap(), prefix, partitions, &[]).await
}

/// Like [`create_topic`], on the broker at `bootstrap`, with topic configs (`max.message.bytes`...).
pub async fn create_topic_at(
    bootstrap: &str,
    prefix: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<String> {
    let topic = unique_name(prefix).replace('_', "-");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating Kafka admin client")?;
    let mut new_topic = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let results = admin
        .create_topics(
            &[new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating topic")?;
    for r in results {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    Ok(topic)
}

/// A record as read back by kcat (an independent client: Debian's librdkafka build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KcatRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: String,
    pub value: String,
}

/// Reads the whole topic from the beginning with kcat and returns every record.
pub fn kcat_read_all(topic: &str) -> anyhow::Result<Vec<KcatRecord>> {
    kcat_read_all_from(&kafka_bootstrap(), topic)
}

/// Like [`kcat_read_all`], from the broker at `bootstrap`.
pub fn kcat_read_all_from(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<KcatRecord>> {
    // Fields are separated by ASCII unit/record separators, which JSON values never contain raw.
    let out = Command::new("kcat")
        .args(["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q"])
        .args(["-f", "%p\x1f%o\x1f%k\x1f%h\x1f%s\x1e"])
        .output()
        .context("running kcat (install it: apt-get install kcat)")?;
    if !out.status.success() {
        bail!("kcat failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout).context("kcat output is not UTF-8")?;
    text.split('\x1e')
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            let f: Vec<&str> = r.trim_start_matches('\n').split('\x1f').collect();
            if f.len() != 5 {
                bail!("unexpected kcat record: {r:?}");
            }
            Ok(KcatRecord {
                partition: f[0].parse()?,
                offset: f[1].parse()?,
                key: f[2].to_string(),
                headers: f[3].to_string(),
                value: f[4].to_string(),
            })
        })
        .collect()
}

/// Drops a replication slot, blocking (for test teardown in `Drop`): a killed relay's walsender
/// may hold the slot for a moment, so it is terminated and the drop retried until the slot is
/// gone. Slots left behind pin WAL on the shared server.
pub fn drop_slot(database_url: &str, slot: &str) {
    let terminate = format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
    );
    let drop = format!(
        "SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots WHERE slot_name = '{slot}' AND NOT active"
    );
    let count = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'");
    for _ in 0..50 {
        let out = Command::new("psql")
            .arg(database_url)
            .args(["-qAt", "-c", &terminate, "-c", &drop, "-c", &count])
            .output();
        match out {
            Ok(o) if String::from_utf8_lossy(&o.stdout).trim().ends_with('0') => return,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("could not drop replication slot {slot}");
}

/// PostgreSQL and/or Kafka private to one test, for tests that stop, restart or reconfigure a
/// service (never done to the shared ones, which other tests use at the same time). Started
/// with `scripts/services` in a folder and on ports of their own; stopped when dropped.
pub struct PrivateServices {
    dir: std::path::PathBuf,
    pub pg_port: u16,
    pub kafka_port: u16,
    kafka_controller_port: u16,
    /// A SASL_SSL listener besides the plaintext one ([`PrivateServices::with_kafka_sasl`]).
    pub kafka_sasl: Option<KafkaSasl>,
}

/// The SASL_SSL listener of a private broker: SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN for one
/// user, over TLS with a CA made for this instance.
#[derive(Clone)]
pub struct KafkaSasl {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The CA certificate (PEM) clients verify the broker with.
    pub ca_file: std::path::PathBuf,
}

impl KafkaSasl {
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// librdkafka properties (the `*_KAFKA_CONFIG` syntax) for `mechanism` and `password`.
    pub fn client_config(&self, mechanism: &str, password: &str) -> String {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanism={mechanism},sasl.username={},\
             sasl.password={password},ssl.ca.location={}",
            self.user,
            self.ca_file.display()
        )
    }
}

impl PrivateServices {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("outbox-private"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            pg_port: free_port(),
            kafka_port: free_port(),
            kafka_controller_port: free_port(),
            kafka_sasl: None,
        }
    }

    /// Like [`PrivateServices::new`], with a SASL_SSL listener on Kafka (a fresh password
    /// per instance, so tests can look for it in logs).
    pub fn with_kafka_sasl() -> Self {
        let mut s = Self::new();
        s.kafka_sasl = Some(KafkaSasl {
            port: free_port(),
            user: "relay".to_string(),
            password: format!("pw-{}", uuid::Uuid::new_v4().simple()),
            ca_file: s.dir.join("kafka/tls/ca.pem"),
        });
        s
    }

    /// Runs `scripts/services <command>` for this instance.
    pub fn services(&self, command: &str) {
        if let Err(e) = self.try_services(command) {
            panic!("{e}");
        }
    }

    /// Like [`Self::services`], returning the failure (e.g. a broker slower to start than the
    /// script waits for, on a loaded machine) instead of panicking.
    pub fn try_services(&self, command: &str) -> Result<(), String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
        let out = Command::new("bash")
            .arg(script)
            .arg(command)
            .env("OUTBOX_SERVICES_DIR", &self.dir)
            .env("OUTBOX_PG_PORT", self.pg_port.to_string())
            .env("OUTBOX_KAFKA_PORT", self.kafka_port.to_string())
            .env(
                "OUTBOX_KAFKA_CONTROLLER_PORT",
                self.kafka_controller_port.to_string(),
            )
            .envs(self.kafka_sasl.iter().flat_map(|s| {
                [
                    ("OUTBOX_KAFKA_SASL", "1".to_string()),
                    ("OUTBOX_KAFKA_SASL_PORT", s.port.to_string()),
                    ("OUTBOX_KAFKA_SASL_USER", s.user.clone()),
                    ("OUTBOX_KAFKA_SASL_PASSWORD", s.password.clone()),
                ]
            }))
            .output()
            .map_err(|e| format!("running scripts/services: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "scripts/services {command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    pub fn database_url(&self) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/bot_game_test",
            self.pg_port
        )
    }

    pub fn kafka_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }
}

impl Default for PrivateServices {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        self.services("down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `cond` returns true, polling every 50 ms, or fails after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `bin --help` and `bin <sub...> --help` for every subcommand (found in the `Commands:`
/// section, recursively) with `env` set. Returns how many pages were read and, for each page
/// that shows one of `secrets`, its command line.
pub fn help_pages_showing(bin: &str, env: &[(&str, &str)], secrets: &[&str]) -> (usize, Vec<String>) {
    let mut pending: Vec<Vec<String>> = vec![vec![]];
    let (mut pages, mut leaking) = (0, Vec::new());
    while let Some(path) = pending.pop() {
        let out = Command::new(bin)
            .args(&path)
            .arg("--help")
            .envs(env.iter().copied())
            .output()
            .expect("running --help");
        assert!(out.status.success(), "{bin} {path:?} --help failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        pages += 1;
        if secrets.iter().any(|s| text.contains(s)) {
            leaking.push(format!("{bin} {} --help", path.join(" ")));
        }
        let commands = text
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "));
        for line in commands {
            let name = line.split_whitespace().next().unwrap_or("help");
            if name != "help" {
                let mut sub = path.clone();
                sub.push(name.to_string());
                pending.push(sub);
            }
        }
    }
    (pages, leaking)
}

/// Runs `bin args...`, which must stop at once on a bad setting: exit code `code`, one line on
/// stderr naming `setting` and containing `expected`, without `hidden` (a secret).
pub fn assert_refused_in_one_line(
    bin: &str,
    args: &[&str],
    code: i32,
    setting: &str,
    expected: &str,
    hidden: &str,
) {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(setting) && stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains(hidden), "{stderr}");
}
