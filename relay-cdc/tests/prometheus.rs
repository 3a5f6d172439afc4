//! Prometheus, for real: Debian's `prometheus` scrapes a relay and a consumer started here, some
//! events flow PostgreSQL -> relay -> Kafka -> consumer -> PostgreSQL, and the series the
//! Grafana dashboard draws are asserted through Prometheus' HTTP API. `promtool check metrics`
//! lints both `/metrics` bodies, and every query of `deploy/grafana/dashboards/outbox.json` is
//! evaluated by that Prometheus.
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus` package; `scripts/test` installs
//! it) and the consumer binary next to relay-cdc's (`cargo build --workspace`, which
//! `scripts/test` runs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Fixture;
use outbox::testkit::{unique_name, wait_until};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Events the test drives: `TXNS` transactions of `PER_TXN` `game.finished` events.
const TXNS: i64 = 20;
const PER_TXN: i64 = 10;
const EVENTS: i64 = TXNS * PER_TXN;
/// The range of the rate() and quantile queries: longer than the whole test, so the window
/// always covers every event however slow the machine is.
const WINDOW: &str = "5m";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = workspace().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// An unused local port (the OS picks it; the tiny window before the child binds it is fine here).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path_and_query` from `addr` over HTTP/1.0 (the server closes the connection after the
/// body, so no chunked decoding is needed); returns (status code, body).
async fn http_get(addr: &str, path_and_query: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {buf:?}"))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

async fn wait_http_ok(addr: &str, path: &str, what: &str) {
    wait_until(Duration::from_secs(60), what, || async {
        Ok(matches!(http_get(addr, path).await, Ok((200, _))))
    })
    .await
    .unwrap();
}

/// The address the relay's log says it serves /metrics on.
fn relay_metrics_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    let at = line.find("127.0.0.1:")?;
    Some(
        line[at..]
            .split(|c: char| c.is_whitespace() || c == '\u{1b}')
            .next()?
            .to_string(),
    )
}

/// A child process killed (SIGKILL) when dropped; its log is printed if the test failed and
/// removed otherwise.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child, log }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {} log {} ---\n{log}", self.name, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// `consumer run` as a child process, from the binary `cargo build --workspace` puts next to
/// relay-cdc's.
fn start_consumer(f: &Fixture, port: u16) -> Proc {
    let bin = Path::new(env!("CARGO_BIN_EXE_relay-cdc")).with_file_name("consumer");
    assert!(
        bin.is_file(),
        "consumer binary not found at {}: build it first (`cargo build -p consumer`; scripts/test \
         runs `cargo build --workspace`)",
        bin.display()
    );
    Proc::spawn(
        "consumer",
        Command::new(&bin)
            .arg("run")
            .args(["--database-url", &f.db.url])
            .args(["--kafka-bootstrap-servers", &f.kafka])
            .args(["--kafka-topic", &f.topic])
            .args(["--kafka-consumer-group", &unique_name("prom")])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info"),
        std::env::temp_dir().join(format!("{}.log", unique_name("consumer"))),
    )
}

/// Debian's Prometheus on a free port, with its own storage in a temp folder, scraping `targets`
/// (job name, host:port) every second.
struct Prometheus {
    addr: String,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Prometheus {
    async fn start(targets: &[(&str, &str)]) -> Self {
        let bin = Path::new("/usr/bin/prometheus");
        assert!(
            bin.is_file(),
            "{} not found: install Debian's prometheus package (apt-get install prometheus; \
             scripts/test does)",
            bin.display()
        );
        let dir = std::env::temp_dir().join(unique_name("prometheus"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let proc = Proc::spawn(
            "prometheus",
            Command::new(bin)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}")),
            dir.join("prometheus.log"),
        );
        wait_http_ok(&addr, "/-/ready", "prometheus ready").await;
        Self {
            addr,
            dir,
            proc: Some(proc),
        }
    }

    /// `/api/v1/query`: the instant vector of `promql` as (labels, value). Panics when
    /// Prometheus rejects the query.
    async fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (code, body) = http_get(&self.addr, &format!("/api/v1/query?query={q}"))
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: {e}: {body}"));
        assert!(
            code == 200 && v["status"] == "success",
            "query {promql} failed ({code}): {body}"
        );
        assert_eq!(v["data"]["resultType"], "vector", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                // Values are strings: "12", "NaN", "+Inf".
                let value = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The value of a query that must yield exactly one series.
    async fn value(&self, promql: &str) -> f64 {
        let series = self.query(promql).await;
        assert_eq!(series.len(), 1, "{promql}: expected one series, got {series:?}");
        series[0].1
    }

    /// Polls `promql` until it yields one series whose value satisfies `ok`; returns that value.
    async fn wait_value(&self, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = Vec::new();
        for _ in 0..120 {
            last = self.query(promql).await;
            if let [(_, v)] = last[..] {
                if ok(v) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{promql}: no acceptable value within 30 s, last {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Stop it before its storage goes; keep the folder when the test failed.
        drop(self.proc.take());
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `promtool check metrics` with `body` on stdin: (success, everything it printed).
fn promtool_check_metrics(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}: install Debian's prometheus package"));
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// The metric names in a `/metrics` body, with a histogram's `_bucket`, `_sum` and `_count`.
fn exported_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next().unwrap(), words.next().unwrap_or(""));
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// The metric names our sources register (the string literals `"outbox_relay_..."` and
/// `"outbox_consumer_..."`), with the series a histogram adds. Unlike a live body, this includes
/// labelled metrics that have no series yet (publish errors before the first error).
fn declared_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["relay-cdc/src/metrics.rs", "consumer/src/metrics.rs"] {
        let src = read(file);
        // Literals only: comments and test strings mention names too.
        names.extend(
            metric_names(&src)
                .into_iter()
                .filter(|n| src.contains(&format!("\"{n}\""))),
        );
        for opts in src.split("HistogramOpts::new(").skip(1) {
            let name = metric_names(opts).into_iter().next().expect("a histogram's name");
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Every `outbox_...` identifier in `text`, in order (metric names; our labels never start so).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("outbox_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// (panel title, PromQL) of every query of the dashboard, with Grafana's `$__rate_interval`
/// replaced by a range Prometheus accepts.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/dashboards/outbox.json"))
        .expect("deploy/grafana/dashboards/outbox.json is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("every panel has a title");
        let targets = panel["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: target without expr"));
            queries.push((title.to_string(), expr.replace("$__rate_interval", WINDOW)));
        }
    }
    queries
}

/// The dashboard names only metrics our services register, and draws what the README's metrics
/// section (Observability) lists. Runs without services.
#[test]
fn dashboard_queries_only_metrics_the_services_register() {
    let declared = declared_names();
    assert!(
        declared.contains("outbox_relay_events_published_total")
            && declared.contains("outbox_consumer_processing_seconds_bucket"),
        "reading the metric names from the sources failed: {declared:?}"
    );
    let queries = dashboard_queries();
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {title}: {expr} names no outbox metric");
        for name in names {
            assert!(
                declared.contains(&name),
                "panel {title}: {name} is not a metric of relay-cdc or the consumer"
            );
            used.insert(name);
        }
    }
    for needed in [
        "outbox_relay_replication_lag_bytes",
        "outbox_relay_replication_lag_seconds",
        "outbox_relay_events_published_total",
        "outbox_relay_commit_to_ack_seconds_bucket",
        "outbox_relay_publish_errors_total",
        "outbox_relay_rows_not_sent",
        "outbox_relay_leader",
        "outbox_consumer_messages_total",
        "outbox_consumer_processing_seconds_bucket",
    ] {
        assert!(used.contains(needed), "the dashboard does not show {needed}");
    }
    for q in ["0.5", "0.99"] {
        assert!(
            queries
                .iter()
                .any(|(_, e)| e.contains(&format!("histogram_quantile({q}"))
                    && e.contains("outbox_relay_commit_to_ack_seconds_bucket")),
            "the dashboard lacks the p{} commit -> ack latency",
            q.trim_start_matches("0.")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_lag_throughput_latency_and_consumer_results() {
    // Declared first so it is dropped last: after the processes, it drops the slot.
    let f = Fixture::new(3).await;

    let relay = f.relay(&[]);
    wait_until(Duration::from_secs(30), "relay metrics address", || async {
        Ok(relay_metrics_addr(&relay.log_text()).is_some())
    })
    .await
    .unwrap();
    let relay_addr = relay_metrics_addr(&relay.log_text()).unwrap();
    // Ready once streaming: every event written from now on has a commit time to measure from.
    wait_http_ok(&relay_addr, "/readyz", "relay ready").await;

    let consumer_addr = format!("127.0.0.1:{}", free_port());
    let consumer = start_consumer(&f, consumer_addr.rsplit(':').next().unwrap().parse().unwrap());
    wait_http_ok(&consumer_addr, "/readyz", "consumer ready").await;

    let prom = Prometheus::start(&[("relay", &relay_addr), ("consumer", &consumer_addr)]).await;
    // Both targets are up and a first sample (all counters 0) is stored before any event, so
    // rate() sees the whole increase.
    for job in ["relay", "consumer"] {
        prom.wait_value(&format!("up{{job=\"{job}\"}}"), |v| v == 1.0)
            .await;
    }
    prom.wait_value("outbox_relay_events_published_total", |v| v == 0.0)
        .await;
    prom.wait_value("outbox_consumer_messages_total{result=\"ok\"}", |v| v == 0.0)
        .await;

    // Events the consumer applies (result ok): valid game.finished payloads, one game each,
    // written over a few seconds so that several scrapes see them arrive.
    for t in 0..TXNS {
        sqlx::query(
            "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
             SELECT 'game.finished', 'game', 'g-' || s,
                    jsonb_build_object('game_id', 'g-' || s, 'chat_id', -100, 'winner_id', 'p1',
                        'standings', jsonb_build_array(jsonb_build_object('player_id', 'p1', 'name', 'Ann'),
                                                       jsonb_build_object('player_id', 'p2', 'name', 'Bob'))),
                    'prom-' || s
               FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) s",
        )
        .bind(t * PER_TXN)
        .bind(PER_TXN)
        .execute(&f.db.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    f.wait_all_sent(Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(60), "every event consumed", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM consumed_events WHERE result = 'ok'")
            .fetch_one(&f.db.pool)
            .await?;
        Ok(n == EVENTS)
    })
    .await
    .unwrap();

    let n = EVENTS as f64;
    // Throughput: the counters reach exactly the number of events, and their rate was positive.
    prom.wait_value("outbox_relay_events_published_total", |v| v == n)
        .await;
    let rate = prom
        .value(&format!("rate(outbox_relay_events_published_total[{WINDOW}])"))
        .await;
    assert!(rate.is_finite() && rate > 0.0, "publish rate {rate}");
    // The rate while events flowed (the 5 m average above mostly measures the window's length).
    let peak = prom
        .value("max_over_time(rate(outbox_relay_events_published_total[3s])[2m:1s])")
        .await;
    assert!(peak.is_finite() && peak >= rate, "peak publish rate {peak}");
    assert_eq!(prom.value("outbox_relay_commit_to_ack_seconds_count").await, n);

    // Lag: both series exist, are finite and not negative; once drained the oldest
    // unconfirmed commit is young.
    let lag_bytes = prom.value("outbox_relay_replication_lag_bytes").await;
    assert!(lag_bytes.is_finite() && lag_bytes >= 0.0, "lag bytes {lag_bytes}");
    let lag_seconds = prom
        .wait_value("outbox_relay_replication_lag_seconds", |v| {
            v.is_finite() && (0.0..5.0).contains(&v)
        })
        .await;
    let max_lag_seconds = prom
        .value(&format!(
            "max_over_time(outbox_relay_replication_lag_seconds[{WINDOW}])"
        ))
        .await;
    assert!(max_lag_seconds.is_finite() && max_lag_seconds >= 0.0);
    assert_eq!(prom.value("outbox_relay_leader").await, 1.0);

    // Commit -> Kafka ack latency: finite, positive, and well below the seconds that would mean
    // the relay stalls.
    let quantile = |q: &str, metric: &str| {
        format!("histogram_quantile({q}, sum by (le) (rate({metric}_bucket[{WINDOW}])))")
    };
    let p50 = prom
        .value(&quantile("0.5", "outbox_relay_commit_to_ack_seconds"))
        .await;
    let p99 = prom
        .value(&quantile("0.99", "outbox_relay_commit_to_ack_seconds"))
        .await;
    for (name, v) in [("p50", p50), ("p99", p99)] {
        assert!(
            v.is_finite() && v > 0.0 && v < 5.0,
            "commit -> ack {name} = {v} s"
        );
    }
    assert!(p50 <= p99, "p50 {p50} > p99 {p99}");

    // Consumer: every result kind has a series; all events applied once, nothing else.
    prom.wait_value("outbox_consumer_messages_total{result=\"ok\"}", |v| v == n)
        .await;
    let results: BTreeMap<String, f64> = prom
        .query("outbox_consumer_messages_total")
        .await
        .into_iter()
        .map(|(labels, v)| (labels["result"].clone(), v))
        .collect();
    assert_eq!(
        results,
        BTreeMap::from(
            [
                ("ok", n),
                ("skipped", 0.0),
                ("duplicate", 0.0),
                ("dlq", 0.0),
                ("retried", 0.0)
            ]
            .map(|(k, v)| (k.to_string(), v))
        ),
        "consumer results by kind"
    );
    // Consumer lag comes from librdkafka's statistics (every 5 s): once they report, every
    // assigned partition is drained.
    let consumer_lag = prom
        .wait_value("sum(outbox_consumer_lag_messages)", |v| v == 0.0)
        .await;
    let processing_p99 = prom
        .value(&quantile("0.99", "outbox_consumer_processing_seconds"))
        .await;
    assert!(
        processing_p99.is_finite() && processing_p99 > 0.0 && processing_p99 < 5.0,
        "consumer processing p99 = {processing_p99} s"
    );
    eprintln!(
        "observed: published {n}, publish rate {rate:.2}/s over {WINDOW} (peak {peak:.1}/s), lag bytes {lag_bytes}, \
         lag seconds {lag_seconds} (max {max_lag_seconds}), commit->ack p50 {p50:.4} s p99 {p99:.4} s, \
         consumer {results:?}, consumer lag {consumer_lag}, processing p99 {processing_p99:.4} s"
    );

    // promtool lints both endpoints as they are after real traffic (histograms filled).
    let mut live = BTreeSet::new();
    for (name, addr) in [("relay", &relay_addr), ("consumer", &consumer_addr)] {
        let (code, body) = http_get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 200, "{name} /metrics");
        let (ok, printed) = promtool_check_metrics(&body);
        assert!(
            ok && printed.trim().is_empty(),
            "promtool check metrics on the {name}'s /metrics:\n{printed}\n--- body ---\n{body}"
        );
        live.extend(exported_names(&body));
    }

    // Every dashboard query is valid PromQL for this Prometheus and names only exported metrics;
    // the ones on metrics with series return data. Labelled metrics without a series yet (publish
    // errors: none happened) must at least be registered by our sources.
    tokio::time::sleep(Duration::from_millis(2500)).await; // two scrapes after the bodies above
    let declared = declared_names();
    for (title, expr) in dashboard_queries() {
        let result = prom.query(&expr).await;
        let mut all_live = true;
        for name in metric_names(&expr) {
            if !live.contains(&name) {
                assert!(
                    declared.contains(&name),
                    "panel {title}: {name} is neither exported nor registered"
                );
                eprintln!("panel {title}: {name} has no series yet; registered in the sources");
                all_live = false;
            }
        }
        if all_live {
            assert!(!result.is_empty(), "panel {title}: {expr} returned no data");
        }
    }

    drop(prom);
    drop(consumer);
    drop(relay);
}
