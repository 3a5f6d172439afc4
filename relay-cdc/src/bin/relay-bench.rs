//! `relay-bench`: the relay benchmark behind `scripts/bench relay` (a harness that prints
//! figures, not a timed test).
//!
//! Every scenario runs on a fresh migrated database, a fresh topic (with
//! `message.timestamp.type=LogAppendTime`) and fresh replication slots, all removed afterwards.
//! It writes the events, runs the real `relay-cdc run` binary as a child process and measures:
//!
//! - relay throughput: events / (first commit -> last row marked `sent`, or last Kafka ack for
//!   logical messages); for the backlog, from the relay's start; for a catch-up, from its
//!   readiness after a restart;
//! - commit -> Kafka latency, independently: the broker's append time of every record (read
//!   back with a consumer) minus the time its INSERT's COMMIT returned to the writer; and the
//!   relay's own `outbox_relay_commit_to_ack_seconds` histogram;
//! - relay CPU (utime + stime from /proc/<pid>/stat) and peak RSS (VmHWM);
//! - the server's decoding limit: `pg_recvlogical` with pgoutput draining the same WAL range
//!   (its slot is created before the writes, it runs after the relay finished with
//!   `--endpos` = the WAL position after the writes; its fixed cost, measured on an empty
//!   range, is subtracted);
//! - WAL bytes per event (including the relay's mark-sent UPDATEs) and the HOT fraction of
//!   those UPDATEs.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const SCENARIO_HELP: &str = "Scenarios (comma-separated names for --scenarios, default all):
  backlog    a) N table rows in 100-row transactions written before the relay starts
  rows-100   b) table rows, live, 100-row transactions, as fast as the writers can
  rows-1     c) table rows, live, 1-row transactions, as fast as the writers can
  rows-rate  d) table rows, 1-row transactions at a fixed rate (--rate for --rate-seconds)
  msgs-100   e) pg_logical_emit_message events, live, 100 per transaction
  msgs-1     e) pg_logical_emit_message events, live, 1 per transaction
  msgs-rate  e) pg_logical_emit_message events, 1 per transaction at the fixed rate
  catchup-rows-100, catchup-rows-1, catchup-msgs-100, catchup-msgs-1
             f) the relay is stopped (its slot confirmed) while N events are written, then
                started: how fast it drains a WAL backlog, like pg_recvlogical does
  kafka-rate Kafka alone at the fixed rate with the relay's producer settings (no PostgreSQL,
             no relay): produce -> delivery report latency, the floor under d)";

#[derive(Parser)]
#[command(
    name = "relay-bench",
    version,
    about = "Benchmarks relay-cdc against the server's own pgoutput decoding (pg_recvlogical)",
    long_about = "Benchmarks relay-cdc against the server's own pgoutput decoding (pg_recvlogical).\n\n\
        Usually run through `scripts/bench relay`, which starts the services and builds the \
        release binaries first.",
    after_help = SCENARIO_HELP
)]
struct Cli {
    /// URL of the cluster to benchmark on (any database; a database per scenario is created next
    /// to it and dropped afterwards). The role needs CREATEDB and REPLICATION.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Kafka bootstrap servers (a topic per scenario is created and deleted afterwards).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:19092")]
    kafka_bootstrap_servers: String,
    /// The relay binary to run.
    #[arg(long, default_value = "target/release/relay-cdc")]
    relay_bin: PathBuf,
    /// pg_recvlogical to measure the server's decoding rate with.
    #[arg(long, default_value = "pg_recvlogical")]
    pg_recvlogical: String,
    /// Events per throughput scenario.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Scenarios to run (see below), or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    scenarios: Vec<String>,
    /// Writer connections for 100-event transactions.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Writer connections for 1-event transactions (commits are fsync-bound: more connections
    /// share each WAL flush).
    #[arg(long, default_value_t = 16)]
    single_writers: usize,
    /// Events per second of the fixed-rate scenarios.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Duration of the fixed-rate scenarios.
    #[arg(long, default_value_t = 30)]
    rate_seconds: u64,
    /// Approximate size of each event's JSON payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Partitions of each scenario's topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Extra argument for `relay-cdc run` (repeat it), e.g. --relay-arg=--mark-batch=20000.
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    relay_args: Vec<String>,
    /// Prefix of the names of this run's databases, slots and topics (default: from the clock).
    #[arg(long)]
    run_id: Option<String>,
    /// Say that the cluster is shared with other sessions: WAL figures then include their WAL.
    #[arg(long)]
    shared_cluster: bool,
    /// Keep each scenario's database and topic (slots are always dropped).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Rows,
    Messages,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Written before the relay starts.
    Backlog,
    /// Written while the relay runs, as fast as possible.
    Live,
    /// Written while the relay runs, at `--rate`.
    Rate,
    /// Written while the relay is stopped (its slot exists), then drained.
    CatchUp,
    /// No PostgreSQL, no relay: the producer alone at `--rate`.
    KafkaRate,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    label: &'static str,
    source: Source,
    mode: Mode,
    txn_events: u64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "backlog",
        label: "a) backlog rows, 100/txn",
        source: Source::Rows,
        mode: Mode::Backlog,
        txn_events: 100,
    },
    Scenario {
        name: "rows-100",
        label: "b) live rows, 100/txn",
        source: Source::Rows,
        mode: Mode::Live,
        txn_events: 100,
    },
    Scenario {
        name: "rows-1",
        label: "c) live rows, 1/txn",
        source: Source::Rows,
        mode: Mode::Live,
        txn_events: 1,
    },
    Scenario {
        name: "rows-rate",
        label: "d) rows at fixed rate, 1/txn",
        source: Source::Rows,
        mode: Mode::Rate,
        txn_events: 1,
    },
    Scenario {
        name: "kafka-rate",
        label: "Kafka alone at fixed rate",
        source: Source::Messages,
        mode: Mode::KafkaRate,
        txn_events: 1,
    },
    Scenario {
        name: "msgs-100",
        label: "e) live messages, 100/txn",
        source: Source::Messages,
        mode: Mode::Live,
        txn_events: 100,
    },
    Scenario {
        name: "msgs-1",
        label: "e) live messages, 1/txn",
        source: Source::Messages,
        mode: Mode::Live,
        txn_events: 1,
    },
    Scenario {
        name: "msgs-rate",
        label: "e) messages at fixed rate",
        source: Source::Messages,
        mode: Mode::Rate,
        txn_events: 1,
    },
    Scenario {
        name: "catchup-rows-100",
        label: "f) catch-up rows, 100/txn",
        source: Source::Rows,
        mode: Mode::CatchUp,
        txn_events: 100,
    },
    Scenario {
        name: "catchup-rows-1",
        label: "f) catch-up rows, 1/txn",
        source: Source::Rows,
        mode: Mode::CatchUp,
        txn_events: 1,
    },
    Scenario {
        name: "catchup-msgs-100",
        label: "f) catch-up messages, 100/txn",
        source: Source::Messages,
        mode: Mode::CatchUp,
        txn_events: 100,
    },
    Scenario {
        name: "catchup-msgs-1",
        label: "f) catch-up messages, 1/txn",
        source: Source::Messages,
        mode: Mode::CatchUp,
        txn_events: 1,
    },
];

const INSERT_ROWS: &str =
    "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
     SELECT 'bench.event', 'bench', 'agg-' || (s % 1000),
            jsonb_build_object('seq', s, 'pad', repeat('x', $3)), 'bench-' || s
       FROM generate_series($1::bigint, $2::bigint) s";

const EMIT_MESSAGES: &str = "SELECT count(pg_logical_emit_message(true, 'outbox', json_build_object(
            'id', gen_random_uuid(), 'event_type', 'bench.event', 'aggregate_type', 'bench',
            'aggregate_id', 'agg-' || (s % 1000),
            'payload', json_build_object('seq', s, 'pad', repeat('x', $3)),
            'created_at', now(), 'idempotency_key', 'bench-' || s)::text))
       FROM generate_series($1::bigint, $2::bigint) s";

/// Everything a scenario created, so it can be removed whatever happened.
#[derive(Default)]
struct Resources {
    admin_url: String,
    db: Option<String>,
    db_url: Option<String>,
    topic: Option<String>,
    slots: Vec<String>,
    relay: Option<Child>,
    log: Option<PathBuf>,
}

/// Figures of one scenario.
#[derive(Debug, Default)]
struct Outcome {
    label: &'static str,
    source: Option<Source>,
    mode: Option<Mode>,
    events: u64,
    writer_rate: f64,
    relay_rate: f64,
    recv_rate: f64,
    /// Last event done, in ms after the last commit returned (live scenarios).
    tail_ms: Option<f64>,
    /// Kafka append time - COMMIT returned, ms: p50, p95, p99, max.
    latency: Option<[f64; 4]>,
    /// Fixed-rate scenarios: the slowest record of the first (warm-up) second, left out of
    /// `latency`.
    warm_up_max_ms: Option<f64>,
    /// pg_recvlogical's fixed cost (an empty run), subtracted from its drain time.
    recv_fixed_s: f64,
    /// Seconds (from the first commit) whose slowest record took more than 20 ms.
    slow_seconds: Option<SlowSeconds>,
    /// The relay's commit_to_ack histogram, ms: p50, p95, p99.
    hist: Option<[f64; 3]>,
    cpu_s: f64,
    walsender_cpu_s: f64,
    rss_kib: u64,
    wal_per_event: f64,
    /// WAL of the writes alone (backlog scenario: the relay starts after them).
    wal_insert_per_event: Option<f64>,
    upd: i64,
    hot_upd: i64,
    records: u64,
    /// Rows still not `sent` after the relay reported every row marked.
    unmarked: i64,
    duplicates: u64,
    load: (f64, f64),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let selected = select(&cli.scenarios)?;
    if !cli.relay_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p relay-cdc) or pass --relay-bin",
            cli.relay_bin.display()
        );
    }
    let run = cli.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        )
    });
    let clk_tck = clock_ticks();
    println!(
        "[bench] run {run}: {} events per throughput scenario, {} writers (100/txn) and {} (1/txn), fixed rate {} ev/s for {} s, {} partitions, relay args {:?}",
        cli.events,
        cli.writers,
        cli.single_writers,
        cli.rate,
        cli.rate_seconds,
        cli.partitions,
        cli.relay_args
    );
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for (i, sc) in selected.iter().enumerate() {
        let mut res = Resources {
            admin_url: cli.database_url.clone(),
            ..Default::default()
        };
        println!("[bench] {} ({})", sc.label, sc.name);
        let tag = format!("{run}_{i}");
        let result = tokio::select! {
            r = async {
                if sc.mode == Mode::KafkaRate {
                    kafka_baseline(&cli, sc, &tag, &mut res).await
                } else {
                    run_scenario(&cli, sc, &tag, clk_tck, &mut res).await
                }
            } => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        let interrupted = matches!(&result, Err(e) if e.to_string() == "interrupted");
        teardown(&cli, &mut res).await;
        match result {
            Ok(o) => {
                print_detail(&o);
                outcomes.push(o);
            }
            Err(e) => {
                eprintln!("[bench] {} failed: {e:#}", sc.name);
                failed.push(sc.name);
            }
        }
        if interrupted {
            break;
        }
    }
    print_table(&cli, &outcomes);
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn select(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if names.iter().any(|n| n == "all") {
        return Ok(SCENARIOS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            SCENARIOS
                .iter()
                .find(|s| s.name == n.trim())
                .copied()
                .with_context(|| format!("unknown scenario {n:?}\n{SCENARIO_HELP}"))
        })
        .collect()
}

async fn run_scenario(
    cli: &Cli,
    sc: &Scenario,
    tag: &str,
    clk_tck: f64,
    res: &mut Resources,
) -> anyhow::Result<Outcome> {
    let events = match sc.mode {
        Mode::Rate => cli.rate * cli.rate_seconds,
        _ => cli.events,
    };
    let load0 = load_average();
    let db = format!("bench_{tag}");
    let db_url = with_database(&cli.database_url, &db);
    let mut admin = PgConnection::connect(&cli.database_url)
        .await
        .context("connecting to --database-url")?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    res.db = Some(db.clone());
    res.db_url = Some(db_url.clone());
    if !cli.shared_cluster {
        // No checkpoint in the middle of the scenario: its full-page images would be counted
        // as the relay's WAL (the next timed checkpoint is checkpoint_timeout away).
        sqlx::query("CHECKPOINT").execute(&mut admin).await?;
    }
    admin.close().await?;
    outbox::migrate::run_all(&db_url).await?;
    let pool = PgPoolOptions::new()
        .max_connections((cli.writers.max(cli.single_writers).max(8) + 2) as u32)
        .connect(&db_url)
        .await?;

    let topic = format!("bench-{}", tag.replace('_', "-"));
    create_topic(&cli.kafka_bootstrap_servers, &topic, cli.partitions).await?;
    res.topic = Some(topic.clone());

    // The decoding reference: its slot exists before the writes, it drains them afterwards.
    let recv_slot = format!("bench_{tag}_recv");
    pg_recvlogical(
        cli,
        &db_url,
        &["--slot", &recv_slot, "--create-slot", "-P", "pgoutput"],
    )
    .await?;
    res.slots.push(recv_slot.clone());
    let relay_slot = format!("bench_{tag}_relay");
    res.slots.push(relay_slot.clone());

    let port = free_port()?;
    let metrics_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = std::env::temp_dir().join(format!("relay-bench-{tag}.log"));
    res.log = Some(log.clone());

    let writers = match (sc.mode, sc.txn_events) {
        (Mode::Rate, _) => cli.single_writers.max(8),
        (_, 1) => cli.single_writers,
        _ => cli.writers,
    };
    let live = matches!(sc.mode, Mode::Live | Mode::Rate);
    let rate = (sc.mode == Mode::Rate).then_some(cli.rate as f64);
    let pad = cli.payload_bytes.saturating_sub(26).max(1) as i32;

    let lsn0 = current_lsn(&pool).await?;
    let relay = |res: &mut Resources| -> anyhow::Result<()> {
        res.relay = Some(spawn_relay(
            cli,
            &db_url,
            &relay_slot,
            &topic,
            metrics_addr,
            &log,
        )?);
        Ok(())
    };
    let mut cpu0 = (0.0, 0.0);
    let mut walsender = None;
    let (writes, relay_start_us);
    match sc.mode {
        Mode::Backlog => {
            writes = write(&pool, sc, events, writers, rate, pad).await?;
            relay_start_us = now_us();
            relay(res)?;
        }
        Mode::CatchUp => {
            // The first run creates the slot; the relay is down while the events are written.
            relay(res)?;
            wait_ready(metrics_addr, res).await?;
            stop_relay(res).await;
            writes = write(&pool, sc, events, writers, rate, pad).await?;
            relay(res)?;
            wait_ready(metrics_addr, res).await?;
            relay_start_us = now_us();
            walsender = walsender_pid(&pool, &relay_slot).await?;
            cpu0 = (
                proc_cpu_seconds(relay_pid(res)?, clk_tck)?,
                walsender.map_or(Ok(0.0), |p| proc_cpu_seconds(p, clk_tck))?,
            );
        }
        Mode::Live | Mode::Rate | Mode::KafkaRate => {
            relay(res)?;
            wait_ready(metrics_addr, res).await?;
            walsender = walsender_pid(&pool, &relay_slot).await?;
            cpu0 = (
                proc_cpu_seconds(relay_pid(res)?, clk_tck)?,
                walsender.map_or(Ok(0.0), |p| proc_cpu_seconds(p, clk_tck))?,
            );
            relay_start_us = now_us();
            writes = write(&pool, sc, events, writers, rate, pad).await?;
        }
    }
    let lsn_writes = current_lsn(&pool).await?;
    // pg_recvlogical learns it passed --endpos from the first record it receives beyond it: make
    // that this record, not the end of whatever WAL follows (the relay's marks, say).
    emit_endpos_marker(&pool).await?;

    let done = wait_done(sc.source, events, metrics_addr, res).await?;
    let pid = relay_pid(res)?;
    if walsender.is_none() {
        walsender = walsender_pid(&pool, &relay_slot).await?;
    }
    let cpu1 = (
        proc_cpu_seconds(pid, clk_tck)?,
        walsender.map_or(Ok(0.0), |p| proc_cpu_seconds(p, clk_tck))?,
    );
    let rss_kib = proc_hwm_kib(pid)?;
    let metrics = scrape(metrics_addr).await?;
    stop_relay(res).await;
    let lsn_end = current_lsn(&pool).await?;

    let mut unmarked = 0;
    if sc.source == Source::Rows {
        unmarked = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status <> 'sent'")
            .fetch_one(&pool)
            .await?;
        if unmarked != 0 {
            eprintln!(
                "[bench]   WARNING: {unmarked} rows are still `new` although the relay marked every row \
                 and confirmed the slot past them (their mark UPDATE found nothing to update)"
            );
        }
    }
    let (upd, hot_upd) = if sc.source == Source::Rows {
        hot_updates(&pool, events as i64).await?
    } else {
        (0, 0)
    };

    // The server's decoding limit over the same WAL.
    let recv_total = recv_drain(cli, &db_url, &recv_slot, &lsn_writes).await?;
    // Its fixed cost (connect, authenticate, start streaming, stop): the same run over an empty
    // range, on a new slot. Subtracted, as the relay's rate is timed once it streams.
    let empty_slot = format!("bench_{tag}_empty");
    pg_recvlogical(
        cli,
        &db_url,
        &["--slot", &empty_slot, "--create-slot", "-P", "pgoutput"],
    )
    .await?;
    res.slots.push(empty_slot.clone());
    let empty_at: String =
        sqlx::query_scalar("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&empty_slot)
            .fetch_one(&pool)
            .await?;
    emit_endpos_marker(&pool).await?;
    let recv_fixed = recv_drain(cli, &db_url, &empty_slot, &empty_at).await?;
    let recv_secs = (recv_total - recv_fixed).max(recv_total / 2.0);

    // Commit -> Kafka append, from the records themselves.
    let kafka = cli.kafka_bootstrap_servers.clone();
    let partitions = cli.partitions;
    let txn_events = sc.txn_events;
    let commit_us = writes.commit_us.clone();
    let topic2 = topic.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_latencies(&kafka, &topic2, partitions, events, &commit_us, txn_events)
    })
    .await??;
    if read.unique < events {
        bail!(
            "Kafka holds {} of {events} events ({} records)",
            read.unique,
            read.records
        );
    }

    let wal_end = lsn_diff(&pool, &lsn_end, &lsn0).await?;
    let wal_writes = lsn_diff(&pool, &lsn_writes, &lsn0).await?;
    let first_commit = writes.first_commit_us;
    let start = if live { first_commit } else { relay_start_us };
    let relay_secs = (done.done_us.saturating_sub(start)) as f64 / 1e6;
    let writer_secs = (writes.last_commit_us.saturating_sub(writes.first_start_us)) as f64 / 1e6;
    let mut latency = None;
    let mut slow_seconds = None;
    let mut warm_up_max_ms = None;
    if live && !read.latencies_us.is_empty() {
        slow_seconds = Some(slow_seconds_of(&read.latencies_us, first_commit));
        // At a fixed rate the first second is a warm-up (new writer sessions, the first decoded
        // relation, the first produce requests): its records are reported apart.
        let warm_until = first_commit + if sc.mode == Mode::Rate { 1_000_000 } else { 0 };
        let mut warm_up: Vec<i64> = Vec::new();
        let mut l: Vec<i64> = Vec::with_capacity(read.latencies_us.len());
        for &(at, latency) in &read.latencies_us {
            if at < warm_until {
                warm_up.push(latency);
            } else {
                l.push(latency);
            }
        }
        warm_up_max_ms = warm_up.iter().max().map(|&m| m as f64 / 1000.0);
        l.sort_unstable();
        let p = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1] as f64 / 1000.0;
        latency = Some([p(0.50), p(0.95), p(0.99), *l.last().unwrap_or(&0) as f64 / 1000.0]);
    }
    let hist = histogram_quantiles(&metrics, "outbox_relay_commit_to_ack_seconds");
    Ok(Outcome {
        label: sc.label,
        source: Some(sc.source),
        mode: Some(sc.mode),
        events,
        writer_rate: events as f64 / writer_secs.max(1e-9),
        relay_rate: events as f64 / relay_secs.max(1e-9),
        recv_rate: events as f64 / recv_secs.max(1e-9),
        tail_ms: live.then(|| done.done_us.saturating_sub(writes.last_commit_us) as f64 / 1000.0),
        latency,
        warm_up_max_ms,
        recv_fixed_s: recv_fixed,
        slow_seconds,
        hist: live.then_some(hist).flatten(),
        cpu_s: cpu1.0 - cpu0.0,
        walsender_cpu_s: cpu1.1 - cpu0.1,
        rss_kib,
        wal_per_event: wal_end as f64 / events as f64,
        wal_insert_per_event: (!live).then(|| wal_writes as f64 / events as f64),
        upd,
        hot_upd,
        records: read.records,
        unmarked,
        duplicates: read.records - read.unique,
        load: (load0, load_average()),
    })
}

/// When the slow records were committed: are they spread out or a few stalls?
#[derive(Debug, Default)]
struct SlowSeconds {
    seconds: usize,
    slow: usize,
    /// (second after the first commit, slowest latency in ms), worst first.
    worst: Vec<(u64, f64)>,
}

fn slow_seconds_of(samples: &[(u64, i64)], first_commit_us: u64) -> SlowSeconds {
    let mut by_second: BTreeMap<u64, i64> = BTreeMap::new();
    for &(at, latency) in samples {
        let second = at.saturating_sub(first_commit_us) / 1_000_000;
        let max = by_second.entry(second).or_insert(latency);
        *max = (*max).max(latency);
    }
    let mut worst: Vec<(u64, f64)> = by_second.iter().map(|(&s, &l)| (s, l as f64 / 1000.0)).collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    SlowSeconds {
        seconds: by_second.len(),
        slow: worst.iter().filter(|w| w.1 > 20.0).count(),
        worst: worst.into_iter().take(5).collect(),
    }
}

/// Delivery reports of the baseline producer: send -> acknowledged, in microseconds.
struct LatencyContext(Arc<std::sync::Mutex<Vec<(u64, i64)>>>);

impl rdkafka::ClientContext for LatencyContext {}

impl rdkafka::producer::ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, sent_us: Box<u64>) {
        if result.is_ok() {
            let latency = now_us() as i64 - *sent_us as i64;
            self.0.lock().expect("not poisoned").push((*sent_us, latency));
        }
    }
}

/// Kafka alone: records like the relay's (key, ~envelope-sized JSON value, four headers),
/// produced at `--rate` with the relay's producer settings; the latency is send -> delivery
/// report. The floor under the relay's commit -> ack latency on this machine at this moment.
async fn kafka_baseline(cli: &Cli, sc: &Scenario, tag: &str, res: &mut Resources) -> anyhow::Result<Outcome> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let load0 = load_average();
    let events = cli.rate * cli.rate_seconds;
    let topic = format!("bench-{}", tag.replace('_', "-"));
    create_topic(&cli.kafka_bootstrap_servers, &topic, cli.partitions).await?;
    res.topic = Some(topic.clone());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(events as usize)));
    // The settings of relay-cdc's producer (src/producer.rs) with its default linger.
    let producer: ThreadedProducer<LatencyContext> = ClientConfig::new()
        .set("bootstrap.servers", &cli.kafka_bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.type", "lz4")
        .create_with_context(LatencyContext(latencies.clone()))?;
    let pad = "x".repeat(cli.payload_bytes.saturating_sub(26).max(1));
    // Warm up as the relay is before it reads the WAL: topic metadata and producer id known.
    producer
        .send(BaseRecord::<str, str, Box<u64>>::with_opaque_to(&topic, Box::new(now_us())).payload("warm-up"))
        .map_err(|(e, _)| e)?;
    tokio::task::block_in_place(|| producer.flush(Duration::from_secs(30)))?;
    latencies.lock().expect("not poisoned").clear();
    let begin = tokio::time::Instant::now();
    let first_us = now_us();
    for i in 0..events {
        tokio::time::sleep_until(begin + Duration::from_secs_f64(i as f64 / cli.rate as f64)).await;
        let key = format!("agg-{}", i % 1000);
        let value = format!(
            r#"{{"id":"00000000-0000-4000-8000-{i:012}","event_type":"bench.event","aggregate_type":"bench","aggregate_id":"{key}","payload":{{"pad":"{pad}","seq":{i}}},"created_at":"2026-01-01T00:00:00.000000Z","idempotency_key":"bench-{i}"}}"#
        );
        let idem = format!("bench-{i}");
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "id",
                value: Some("00000000-0000-4000-8000-000000000000"),
            })
            .insert(Header {
                key: "event_type",
                value: Some("bench.event"),
            })
            .insert(Header {
                key: "aggregate_type",
                value: Some("bench"),
            })
            .insert(Header {
                key: "idempotency_key",
                value: Some(idem.as_str()),
            });
        let record = BaseRecord::with_opaque_to(&topic, Box::new(now_us()))
            .key(key.as_str())
            .payload(value.as_str())
            .headers(headers);
        if let Err((e, _)) = producer.send(record) {
            bail!("producing to {topic}: {e}");
        }
    }
    let last_us = now_us();
    tokio::task::block_in_place(|| producer.flush(Duration::from_secs(60)))?;
    let samples = std::mem::take(&mut *latencies.lock().expect("not poisoned"));
    if (samples.len() as u64) < events {
        bail!("only {} of {events} records were acknowledged", samples.len());
    }
    let mut l: Vec<i64> = samples.iter().map(|x| x.1).collect();
    l.sort_unstable();
    let p = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1] as f64 / 1000.0;
    Ok(Outcome {
        label: sc.label,
        source: None,
        mode: Some(Mode::KafkaRate),
        events,
        writer_rate: events as f64 / ((last_us - first_us) as f64 / 1e6).max(1e-9),
        latency: Some([p(0.50), p(0.95), p(0.99), *l.last().unwrap_or(&0) as f64 / 1000.0]),
        records: events,
        slow_seconds: Some(slow_seconds_of(&samples, first_us)),
        load: (load0, load_average()),
        ..Default::default()
    })
}

/// What the writers did: the COMMIT-returned time of every transaction.
struct Writes {
    /// Indexed by transaction number (event index / events per transaction).
    commit_us: Vec<u64>,
    first_start_us: u64,
    first_commit_us: u64,
    last_commit_us: u64,
}

/// Writes `events` events in transactions of `sc.txn_events` from `writers` connections, as
/// fast as they go or on the schedule of `rate` events per second.
async fn write(
    pool: &PgPool,
    sc: &Scenario,
    events: u64,
    writers: usize,
    rate: Option<f64>,
    pad: i32,
) -> anyhow::Result<Writes> {
    let per_txn = sc.txn_events;
    let txns = events.div_ceil(per_txn);
    let next = Arc::new(AtomicU64::new(0));
    let sql = match sc.source {
        Source::Rows => INSERT_ROWS,
        Source::Messages => EMIT_MESSAGES,
    };
    let begin = tokio::time::Instant::now();
    let first_start_us = now_us();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let pool = pool.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut conn = pool.acquire().await?;
            let mut done: Vec<(u64, u64)> = Vec::new();
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= txns {
                    return anyhow::Ok(done);
                }
                let from = t * per_txn;
                let to = (from + per_txn).min(events) - 1;
                if let Some(rate) = rate {
                    tokio::time::sleep_until(begin + Duration::from_secs_f64(from as f64 / rate)).await;
                }
                sqlx::query(sql)
                    .bind(from as i64)
                    .bind(to as i64)
                    .bind(pad)
                    .execute(&mut *conn)
                    .await?;
                done.push((t, now_us()));
            }
        });
    }
    let mut commit_us = vec![0u64; txns as usize];
    while let Some(r) = tasks.join_next().await {
        for (t, at) in r?? {
            commit_us[t as usize] = at;
        }
    }
    Ok(Writes {
        first_commit_us: commit_us.iter().copied().min().unwrap_or(0),
        last_commit_us: commit_us.iter().copied().max().unwrap_or(0),
        commit_us,
        first_start_us,
    })
}

struct Done {
    done_us: u64,
}

/// Polls the relay's /metrics until every event is done: marked `sent` (rows) or acknowledged
/// by Kafka (messages).
async fn wait_done(
    source: Source,
    events: u64,
    addr: SocketAddr,
    res: &mut Resources,
) -> anyhow::Result<Done> {
    let counter = match source {
        Source::Rows => "outbox_relay_rows_marked_sent_total",
        Source::Messages => "outbox_relay_events_published_total",
    };
    let mut last = (0.0, Instant::now());
    loop {
        if let Some(status) = res.relay.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("the relay exited ({status}){}", log_tail(res));
        }
        if let Ok(m) = scrape(addr).await {
            let n = m.get(counter).copied().unwrap_or(0.0);
            if n >= events as f64 {
                return Ok(Done { done_us: now_us() });
            }
            if n > last.0 {
                last = (n, Instant::now());
            }
        }
        if last.1.elapsed() > Duration::from_secs(120) {
            bail!("no progress for 120 s ({counter} = {}){}", last.0, log_tail(res));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(addr: SocketAddr, res: &mut Resources) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = res.relay.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("the relay exited at start ({status}){}", log_tail(res));
        }
        if let Ok((200, _)) = http_get(addr, "/readyz").await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay was not ready within 120 s{}", log_tail(res));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_relay(
    cli: &Cli,
    db_url: &str,
    slot: &str,
    topic: &str,
    metrics: SocketAddr,
    log: &PathBuf,
) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("creating {}", log.display()))?;
    Command::new(&cli.relay_bin)
        .arg("run")
        .args(["--database-url", db_url])
        .args(["--slot-name", slot])
        .args(["--kafka-bootstrap-servers", &cli.kafka_bootstrap_servers])
        .args(["--kafka-topic", topic])
        .args(["--metrics-addr", &metrics.to_string()])
        .args(&cli.relay_args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", cli.relay_bin.display()))
}

fn relay_pid(res: &Resources) -> anyhow::Result<u32> {
    res.relay
        .as_ref()
        .and_then(Child::id)
        .context("the relay is not running")
}

/// SIGTERM (the relay drains and confirms), then SIGKILL after 20 s.
async fn stop_relay(res: &mut Resources) {
    let Some(mut child) = res.relay.take() else {
        return;
    };
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Removes what the scenario created. Slots first: they pin WAL on the server.
async fn teardown(cli: &Cli, res: &mut Resources) {
    stop_relay(res).await;
    if let Ok(mut admin) = PgConnection::connect(&res.admin_url).await {
        for slot in &res.slots {
            for _ in 0..100 {
                let _ = sqlx::query(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                      WHERE slot_name = $1 AND active",
                )
                .bind(slot)
                .execute(&mut admin)
                .await;
                let _ = sqlx::query(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                      WHERE slot_name = $1 AND NOT active",
                )
                .bind(slot)
                .execute(&mut admin)
                .await;
                let left: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
                        .bind(slot)
                        .fetch_one(&mut admin)
                        .await
                        .unwrap_or(1);
                if left == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let (Some(db), false) = (&res.db, cli.keep) {
            if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut admin)
                .await
            {
                eprintln!("[bench] could not drop database {db}: {e}");
            }
        }
        let left: Vec<String> =
            sqlx::query_scalar("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = ANY($1)")
                .bind(&res.slots)
                .fetch_all(&mut admin)
                .await
                .unwrap_or_default();
        if !left.is_empty() {
            eprintln!("[bench] WARNING: could not drop replication slots {left:?}: drop them by hand");
        }
    } else {
        eprintln!(
            "[bench] WARNING: cannot connect to drop slots {:?}: drop them by hand",
            res.slots
        );
    }
    if let (Some(topic), false) = (&res.topic, cli.keep) {
        let _ = delete_topic(&cli.kafka_bootstrap_servers, topic).await;
    }
    if let (Some(log), false) = (&res.log, cli.keep) {
        let _ = std::fs::remove_file(log);
    }
}

fn log_tail(res: &Resources) -> String {
    let Some(log) = &res.log else {
        return String::new();
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!("\n--- relay log ({}) ---\n{tail}", log.display())
}

async fn pg_recvlogical(cli: &Cli, db_url: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        Command::new(&cli.pg_recvlogical)
            .args(["-d", db_url])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("pg_recvlogical did not finish within 600 s")?
    .with_context(|| format!("running {}", cli.pg_recvlogical))?;
    if !out.status.success() {
        bail!(
            "pg_recvlogical {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("message.timestamp.type", "LogAppendTime");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&[new], &opts).await? {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    Ok(())
}

async fn delete_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin.delete_topics(&[topic], &opts).await?;
    Ok(())
}

struct Read {
    records: u64,
    unique: u64,
    /// (COMMIT returned, append - COMMIT returned), microseconds.
    latencies_us: Vec<(u64, i64)>,
}

/// Reads the whole topic back: broker append time of each record minus the COMMIT-returned
/// time of its transaction (found through the idempotency_key header, `bench-<index>`).
fn read_latencies(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    events: u64,
    commit_us: &[u64],
    per_txn: u64,
) -> anyhow::Result<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = vec![false; events as usize];
    let mut read = Read {
        records: 0,
        unique: 0,
        latencies_us: Vec::with_capacity(events as usize),
    };
    let mut at_end = HashSet::new();
    let mut create_time = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < partitions as usize && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                read.records += 1;
                let index = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "idempotency_key"))
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|k| k.strip_prefix("bench-"))
                    .and_then(|i| i.parse::<u64>().ok())
                    .with_context(|| {
                        format!("record at offset {} has no bench idempotency key", m.offset())
                    })?;
                let Some(slot) = seen.get_mut(index as usize) else {
                    bail!("record for event {index}, beyond the {events} written");
                };
                if !*slot {
                    *slot = true;
                    read.unique += 1;
                    let appended_ms = match m.timestamp() {
                        Timestamp::LogAppendTime(ms) => ms,
                        Timestamp::CreateTime(ms) => {
                            create_time = true;
                            ms
                        }
                        Timestamp::NotAvailable => continue,
                    };
                    let committed = commit_us[(index / per_txn) as usize] as i64;
                    read.latencies_us
                        .push((committed as u64, appended_ms * 1000 - committed));
                }
            }
        }
    }
    if create_time {
        eprintln!("[bench] WARNING: the topic kept CreateTime: latencies use the producer's clock");
    }
    Ok(read)
}

/// `GET path` over HTTP/1.1; returns the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_string()))
}

/// The relay's /metrics as `name{labels}` -> value.
async fn scrape(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, f64>> {
    let (status, body) = http_get(addr, "/metrics").await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

/// p50, p95, p99 (ms) of a Prometheus histogram, interpolated within buckets as
/// `histogram_quantile` does.
fn histogram_quantiles(m: &BTreeMap<String, f64>, name: &str) -> Option<[f64; 3]> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let q = |q: f64| {
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, count) in &buckets {
            if count >= rank {
                if le.is_infinite() {
                    return lower * 1000.0;
                }
                let width = count - below;
                let frac = if width > 0.0 { (rank - below) / width } else { 1.0 };
                return (lower + (le - lower) * frac) * 1000.0;
            }
            lower = le;
            below = count;
        }
        lower * 1000.0
    };
    Some([q(0.50), q(0.95), q(0.99)])
}

/// Times `pg_recvlogical --start` (pgoutput, as the relay asks for it) from the slot's position
/// to `endpos`.
async fn recv_drain(cli: &Cli, db_url: &str, slot: &str, endpos: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    pg_recvlogical(
        cli,
        db_url,
        &[
            "--slot",
            slot,
            "--start",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=outbox_pub",
            "-o",
            "messages=true",
            "--endpos",
            endpos,
            "-f",
            "/dev/null",
        ],
    )
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn emit_endpos_marker(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_logical_emit_message(false, 'relay-bench-endpos', '')")
        .execute(pool)
        .await?;
    Ok(())
}

async fn current_lsn(pool: &PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?)
}

async fn lsn_diff(pool: &PgPool, a: &str, b: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint")
            .bind(a)
            .bind(b)
            .fetch_one(pool)
            .await?,
    )
}

async fn walsender_pid(pool: &PgPool, slot: &str) -> anyhow::Result<Option<u32>> {
    for _ in 0..100 {
        let pid: Option<i32> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(pool)
                .await?
                .flatten();
        if let Some(pid) = pid {
            return Ok(Some(pid as u32));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// UPDATEs and HOT UPDATEs of outbox_events. The relay has exited, so its backends flushed
/// their statistics; wait until they show up.
async fn hot_updates(pool: &PgPool, expect: i64) -> anyhow::Result<(i64, i64)> {
    let mut last = (0, 0);
    for _ in 0..40 {
        last = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'outbox_events'",
        )
        .fetch_one(pool)
        .await?;
        if last.0 >= expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(last)
}

/// utime + stime of a process, in seconds.
fn proc_cpu_seconds(pid: u32, clk_tck: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed /proc/pid/stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clk_tck)
}

/// Peak resident set size (VmHWM) in KiB.
fn proc_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/pid/status")
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `base_url` with its database replaced (query string kept).
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

fn print_detail(o: &Outcome) {
    if o.mode == Some(Mode::KafkaRate) {
        if let Some(l) = o.latency {
            println!(
                "[bench]   {} records at {:.0} ev/s: produce -> ack p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms; load {:.2} -> {:.2}",
                o.events, o.writer_rate, l[0], l[1], l[2], l[3], o.load.0, o.load.1
            );
        }
        print_slow_seconds(o);
        return;
    }
    let mut line = format!(
        "[bench]   {} events: writers {:.0} ev/s, relay {:.0} ev/s, pg_recvlogical {:.0} ev/s (x{:.2})",
        o.events,
        o.writer_rate,
        o.relay_rate,
        o.recv_rate,
        o.relay_rate / o.recv_rate
    );
    line += &format!(
        " [pg_recvlogical's fixed {:.0} ms subtracted]",
        o.recv_fixed_s * 1000.0
    );
    if let Some(t) = o.tail_ms {
        line += &format!(", done {t:.0} ms after the last commit");
    }
    println!("{line}");
    if let Some(l) = o.latency {
        println!(
            "[bench]   commit -> Kafka append: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
            l[0],
            l[1],
            l[2],
            l[3],
            o.warm_up_max_ms
                .map(|m| format!(" (after the first second; its slowest: {m:.1} ms)"))
                .unwrap_or_default()
        );
    }
    print_slow_seconds(o);
    if let Some(h) = o.hist {
        println!(
            "[bench]   relay histogram commit -> ack: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
            h[0], h[1], h[2]
        );
    }
    println!(
        "[bench]   relay CPU {:.2} s ({:.2} us/event), peak RSS {:.1} MiB; its walsender {:.2} s CPU; WAL {:.0} B/event{}{}",
        o.cpu_s,
        o.cpu_s * 1e6 / o.events as f64,
        o.rss_kib as f64 / 1024.0,
        o.walsender_cpu_s,
        o.wal_per_event,
        o.wal_insert_per_event
            .map(|w| format!(" ({w:.0} writes + {:.0} after them)", o.wal_per_event - w))
            .unwrap_or_default(),
        if o.source == Some(Source::Rows) {
            format!(
                ", HOT {}/{} updates ({:.1}%)",
                o.hot_upd,
                o.upd,
                100.0 * o.hot_upd as f64 / o.upd.max(1) as f64
            )
        } else {
            String::new()
        },
    );
    println!(
        "[bench]   Kafka records {} (duplicates {}){}; load {:.2} -> {:.2}",
        o.records,
        o.duplicates,
        if o.source == Some(Source::Rows) {
            format!(", rows left unsent {}", o.unmarked)
        } else {
            String::new()
        },
        o.load.0,
        o.load.1
    );
}

fn print_slow_seconds(o: &Outcome) {
    if let Some(s) = &o.slow_seconds {
        let worst: Vec<String> = s.worst.iter().map(|(t, l)| format!("+{t}s {l:.0} ms")).collect();
        println!(
            "[bench]   seconds with a record slower than 20 ms: {} of {}; slowest: {}",
            s.slow,
            s.seconds,
            worst.join(", ")
        );
    }
}

fn print_table(cli: &Cli, outcomes: &[Outcome]) {
    if outcomes.is_empty() {
        return;
    }
    let ms3 = |v: Option<[f64; 3]>| {
        v.map(|v| format!("{:.1} / {:.1} / {:.1}", v[0], v[1], v[2]))
            .unwrap_or_else(|| "-".into())
    };
    println!();
    println!(
        "| scenario | events | writers ev/s | relay ev/s | pg_recvlogical ev/s | relay / recv | commit->Kafka p50/p95/p99 ms | relay histogram p50/p95/p99 ms | relay CPU s per 100k (us/event) | relay peak RSS MiB | WAL B/event | HOT marks | rows left unsent | load |"
    );
    println!("|---|---:|---:|---:|---:|---|---|---|---|---|---|---:|---:|---:|");
    for o in outcomes {
        let load = o.load.0.max(o.load.1);
        if o.mode == Some(Mode::KafkaRate) {
            let lat = o.latency.map(|l| [l[0], l[1], l[2]]);
            println!(
                "| {} (produce -> ack, no PostgreSQL) | {} | {:.0} | - | - | - | {} | - | - | - | - | - | - | {load:.1} |",
                o.label,
                o.events,
                o.writer_rate,
                ms3(lat)
            );
            continue;
        }
        let ratio = o.relay_rate / o.recv_rate;
        let target = if o.source == Some(Source::Messages) {
            0.9
        } else {
            0.5
        };
        let verdict = |ok: bool| if ok { "ok" } else { "MISS" };
        let ratio_cell = match o.mode {
            Some(Mode::Rate) => format!("{ratio:.2} (fixed rate)"),
            // The relay kept up with the writers: the ratio measures the writers.
            Some(Mode::Live) if o.relay_rate >= 0.9 * o.writer_rate => {
                format!("{ratio:.2} (writer-bound)")
            }
            _ => format!("{ratio:.2} {} (>= {target})", verdict(ratio >= target)),
        };
        let lat = o.latency.map(|l| {
            let mut cell = format!("{:.1} / {:.1} / {:.1}", l[0], l[1], l[2]);
            if o.mode == Some(Mode::Rate) {
                cell += &format!(" {} (<= 20)", verdict(l[2] <= 20.0));
            }
            cell
        });
        let us = o.cpu_s * 1e6 / o.events as f64;
        let rss = o.rss_kib as f64 / 1024.0;
        let rows = o.source == Some(Source::Rows);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {:.2} ({:.1}) {} | {:.1} {} | {:.0}{} | {} | {} | {load:.1} |",
            o.label,
            o.events,
            o.writer_rate,
            o.relay_rate,
            o.recv_rate,
            ratio_cell,
            lat.unwrap_or_else(|| "-".into()),
            ms3(o.hist),
            o.cpu_s * 1e5 / o.events as f64,
            us,
            verdict(us <= 5.0),
            rss,
            verdict(rss <= 32.0),
            o.wal_per_event,
            o.wal_insert_per_event
                .filter(|_| rows)
                .map(|w| format!(" ({w:.0} insert + {:.0} mark)", o.wal_per_event - w))
                .unwrap_or_default(),
            if rows {
                format!("{:.0}%", 100.0 * o.hot_upd as f64 / o.upd.max(1) as f64)
            } else {
                "-".into()
            },
            if rows { o.unmarked.to_string() } else { "-".into() },
        );
    }
    println!();
    println!(
        "Targets: relay/recv >= 0.9 (messages), >= 0.5 (rows); p99 <= 20 ms at {} ev/s; relay CPU <= 5 us/event; peak RSS <= 32 MiB.",
        cli.rate
    );
    println!(
        "relay ev/s = events / (first COMMIT returned -> last row marked sent, or last Kafka ack for messages); a) from the relay's \
         start, f) from its readiness. pg_recvlogical drains the same WAL range (slot created before the writes, run after the \
         relay finished, --endpos = WAL position after the writes). commit->Kafka = broker LogAppendTime - COMMIT returned \
         (1 ms resolution). load = 1-minute load average (the higher of start and end)."
    );
    if cli.shared_cluster {
        println!(
            "WAL B/event was measured on a shared cluster: it includes WAL other sessions wrote meanwhile."
        );
    }
}
