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
    /// Creates `t_<unique>` in the cluster and applies every migration.
    pub async fn new() -> anyhow::Result<Self> {
        let base: PgConnectOptions = database_url().parse().context("parsing DATABASE_URL")?;
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
        let url = opts.to_url_lossy().to_string();
        crate::migrate::run(&url).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .with_context(|| format!("connecting to test database {name}"))?;
        Ok(Self { name, url, pool })
    }
}

/// Creates a topic with a unique name (`prefix-<unique>`) and waits until the broker has it.
pub async fn create_topic(prefix: &str, partitions: i32) -> anyhow::Result<String> {
    let topic = unique_name(prefix).replace('_', "-");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .context("creating Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(&topic, partitions, TopicReplication::Fixed(1))],
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
    // Fields are separated by ASCII unit/record separators, which JSON values never contain raw.
    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &kafka_bootstrap(),
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
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
