//! `relay-cdc run --source poll` end to end: real PostgreSQL, real Kafka, the real binary, kcat
//! as the reader. The same guarantees as the CDC source: envelope, key, headers, per-aggregate
//! order, nothing lost across kill -9, plus what is the poller's own: stale claims reclaimed,
//! no replication privilege or wal_level needed.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use outbox::testkit::{PrivateServices, SEED_STEP4_INSERT, event_id, unique_name, wait_until};
use sqlx::PgPool;

/// The poller for this fixture, polling every 50 ms when idle.
fn poller(f: &Fixture, extra: &[&str]) -> Relay {
    let mut args = vec!["--source", "poll", "--poll-interval-ms", "50"];
    args.extend_from_slice(extra);
    f.relay(&args)
}

/// The poller connecting with another database URL (another role).
fn poller_as(f: &Fixture, url: &str) -> Relay {
    let log = std::env::temp_dir().join(format!("{}.log", unique_name(&f.slot)));
    let child = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args(["run", "--source", "poll", "--poll-interval-ms", "50"])
        .args(["--database-url", url])
        .args(["--slot-name", &f.slot])
        .args(["--kafka-bootstrap-servers", &f.kafka])
        .args(["--kafka-topic", &f.topic])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info,relay_cdc=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Relay { child, log }
}

async fn status_of(pool: &PgPool, key: &str) -> String {
    sqlx::query_scalar("SELECT status FROM outbox_events WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn insert_one(pool: &PgPool, aggregate: &str, seq: i64, pad: usize) {
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
         VALUES ('test.event', 'game', $1, jsonb_build_object('seq', $2::bigint, 'pad', repeat('x', $3)), $1 || '-' || $2)",
    )
    .bind(aggregate)
    .bind(seq)
    .bind(pad as i32)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_and_live_rows_arrive_with_envelope_key_and_headers() {
    let f = Fixture::new(3).await;
    // Backlog, written before any poller ran: rows, the seed's own INSERT, a row a legacy
    // poller left in `processing` with no claim time, and rows that must not be published.
    f.insert("agg-backlog", 1, 3).await;
    sqlx::raw_sql(SEED_STEP4_INSERT)
        .execute(&f.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, idempotency_key, status)
         VALUES ('test.event', 'game', 'agg-legacy', 'legacy-0', 'processing'),
                ('test.event', 'game', 'agg-done', 'done-0', 'sent'),
                ('test.event', 'game', 'agg-failed', 'failed-0', 'failed')",
    )
    .execute(&f.db.pool)
    .await
    .unwrap();
    let relay = poller(&f, &[]);
    // 3 + the seed's + the legacy one, and the row inserted as sent.
    wait_until(Duration::from_secs(60), "backlog sent", || async {
        Ok(f.count("sent").await == 6)
    })
    .await
    .unwrap();

    // Live rows; a rolled-back transaction publishes nothing.
    f.insert("agg-live", 1, 5).await;
    let mut tx = f.db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, idempotency_key) VALUES ('x', 'game', 'agg-rollback', 'rb')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    wait_until(Duration::from_secs(60), "live rows sent", || async {
        Ok(f.count("sent").await == 11)
    })
    .await
    .unwrap();

    let records = f.wait_records(10).await;
    assert_eq!(
        records.len(),
        10,
        "3 backlog + 1 seed + 1 legacy + 5 live, nothing else: {records:#?}"
    );
    let by_id: HashMap<String, &outbox::testkit::KcatRecord> =
        records.iter().map(|r| (event_id(r), r)).collect();
    type Row = (
        uuid::Uuid,
        String,
        String,
        String,
        serde_json::Value,
        Option<String>,
        i32,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, event_type, aggregate_type, aggregate_id, payload, idempotency_key, publish_attempts,
                published_at IS NOT NULL
           FROM outbox_events WHERE status = 'sent' AND idempotency_key <> 'done-0'",
    )
    .fetch_all(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 10);
    for (id, event_type, aggregate_type, aggregate_id, payload, key, attempts, published) in rows {
        let r = by_id
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("row {id} not in Kafka"));
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["event_type"], event_type.as_str());
        assert_eq!(v["aggregate_type"], aggregate_type.as_str());
        assert_eq!(v["aggregate_id"], aggregate_id.as_str());
        assert_eq!(v["payload"], payload);
        assert_eq!(v["idempotency_key"].as_str(), key.as_deref());
        assert!(
            v["created_at"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .is_ok()
        );
        assert_eq!(r.key, aggregate_id);
        assert!(r.headers.contains(&format!("id={id}")), "headers {}", r.headers);
        assert!(
            r.headers.contains(&format!("event_type={event_type}")),
            "headers {}",
            r.headers
        );
        assert!(r.headers.contains("aggregate_type=game"), "headers {}", r.headers);
        if let Some(k) = &key {
            assert!(
                r.headers.contains(&format!("idempotency_key={k}")),
                "headers {}",
                r.headers
            );
        }
        assert_eq!(attempts, 1);
        assert!(published);
    }
    assert_eq!(status_of(&f.db.pool, "failed-0").await, "failed");
    assert!(!records.iter().any(|r| r.key == "agg-rollback"));

    // The poll mode's own index exists and is valid, and the poller said so.
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'outbox_events_poll_idx'::regclass",
    )
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert!(valid);
    let log = relay.log_text();
    assert!(log.contains("poll index created"), "{log}");
    assert!(log.contains("non-HOT"), "{log}");
    // No replication slot: the poller never touches replication.
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
        .bind(&f.slot)
        .fetch_one(&f.db.pool)
        .await
        .unwrap();
    assert_eq!(slots, 0);
    drop(relay);

    // A second start finds the index instead of building it.
    let relay = poller(&f, &[]);
    wait_until(Duration::from_secs(30), "index found", || async {
        Ok(relay.log_text().contains("poll index exists"))
    })
    .await
    .unwrap();
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_aggregate_order_holds_under_concurrent_writers() {
    let f = Fixture::new(4).await;
    let relay = poller(&f, &["--poll-batch", "500"]);
    // 50 aggregates x 200 events, written by concurrent transactions of 10 events each.
    let mut tasks = Vec::new();
    for a in 0..50 {
        let pool = f.db.pool.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..20 {
                sqlx::query(
                    "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key)
                     SELECT 'test.event', 'game', $1, jsonb_build_object('seq', s), $1 || '-' || s
                       FROM generate_series($2::bigint, $2::bigint + 9) s",
                )
                .bind(format!("agg-{a}"))
                .bind(batch * 10)
                .execute(&pool)
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    f.wait_all_sent(Duration::from_secs(120)).await;
    let records = f.wait_records(10_000).await;
    assert_eq!(records.len(), 10_000, "no duplicates without faults");
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    let mut ordered = records.clone();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    for r in &ordered {
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        let seq = v["payload"]["seq"].as_i64().unwrap();
        let prev = last.insert(r.key.clone(), seq);
        assert_eq!(prev.map_or(0, |p| p + 1), seq, "aggregate {} out of order", r.key);
        partitions.entry(r.key.clone()).or_default().insert(r.partition);
    }
    assert_eq!(last.len(), 50);
    assert!(last.values().all(|&s| s == 199));
    assert!(partitions.values().all(|p| p.len() == 1));
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_six_times_during_20k_events_loses_nothing_and_keeps_order() {
    let f = Fixture::new(4).await;
    let args = ["--poll-stale-secs", "3", "--poll-batch", "500"];
    let writer = spawn_writer(f.db.pool.clone(), 200, 100, 20, Duration::from_millis(40));
    let mut killed = Vec::new();
    let mut relay = poller(&f, &args);
    for i in 0..6 {
        // Kill while it polls (not while it starts), at a different point of a batch each time.
        wait_until(Duration::from_secs(30), "the poller claiming", || async {
            Ok(relay.log_text().contains("claimed"))
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300 + 170 * i)).await;
        relay.kill9();
        killed.push(relay);
        relay = poller(&f, &args);
    }
    writer.await.unwrap();
    f.wait_all_sent(Duration::from_secs(180)).await;
    let rows = f.row_ids().await;
    assert_eq!(rows.len(), 20_000);
    let records = f.wait_records(20_000).await.len();
    let duplicates = assert_delivered(&f, &rows);
    killed.push(relay);
    let logs: String = killed.iter().map(Relay::log_text).collect();
    let reclaimed: usize = logs
        .lines()
        .filter_map(|l| {
            l.split("reclaimed ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    println!(
        "poll: kill -9 x6 over 20000 events: {records} records in Kafka, {duplicates} duplicates, \
         {reclaimed} rows reclaimed from dead pollers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_mid_run_loses_nothing_and_the_waiting_batch_never_goes_stale() {
    let svc = PrivateServices::new();
    svc.services("kafka-up");
    let f = Fixture::on(&outbox::testkit::database_url(), &svc.kafka_bootstrap(), 3, &[]).await;
    let relay = poller(&f, &["--poll-stale-secs", "3"]);
    let writer = spawn_writer(f.db.pool.clone(), 150, 20, 10, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(3)).await;
    svc.services("kafka-down");
    // The batch in flight waits for Kafka; its claim is refreshed, never older than the stale
    // time, so no poller would take it for a dead one.
    let mut waiting = 0;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (processing, old): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE processing_since < now() - interval '3 seconds')
               FROM outbox_events WHERE status = 'processing'",
        )
        .fetch_one(&f.db.pool)
        .await
        .unwrap();
        assert_eq!(old, 0, "a live poller's claim went stale");
        waiting = waiting.max(processing);
    }
    assert!(waiting > 0, "a batch was waiting for Kafka");
    svc.services("kafka-up");
    writer.await.unwrap();
    f.wait_all_sent(Duration::from_secs(120)).await;
    let rows = f.row_ids().await;
    assert_eq!(rows.len(), 3000);
    f.wait_records(rows.len()).await;
    let duplicates = assert_delivered(&f, &rows);
    assert!(relay.log_text().contains("claim refreshed"));
    println!("poll: Kafka down 12 s: 3000 events, {duplicates} duplicates, up to {waiting} rows waited");
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn row_left_processing_by_a_dead_poller_is_reclaimed_after_stale_secs() {
    let f = Fixture::new(2).await;
    // A dead poller's claim on agg-a's first event, just now; agg-a's next event waits behind
    // it, agg-b is free.
    sqlx::query(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, idempotency_key, status, processing_since)
         VALUES ('test.event', 'game', 'agg-a', '{\"seq\": 0}', 'agg-a-0', 'processing', now())",
    )
    .execute(&f.db.pool)
    .await
    .unwrap();
    let claimed = Instant::now();
    insert_one(&f.db.pool, "agg-a", 1, 10).await;
    insert_one(&f.db.pool, "agg-b", 0, 10).await;
    let relay = poller(&f, &["--poll-stale-secs", "8"]);
    wait_until(Duration::from_secs(30), "agg-b sent", || async {
        Ok(status_of(&f.db.pool, "agg-b-0").await == "sent")
    })
    .await
    .unwrap();
    let b_sent = claimed.elapsed();
    assert_eq!(
        status_of(&f.db.pool, "agg-a-0").await,
        "processing",
        "agg-b needs no reclaim, agg-a does ({b_sent:?} after the claim)"
    );
    assert_eq!(
        status_of(&f.db.pool, "agg-a-1").await,
        "new",
        "agg-a's next event waits behind the held one"
    );
    // The lag is the age of the oldest unsent row: the held one.
    let addr = metrics_addr(&relay.log_text()).expect("metrics address in the log");
    wait_until(Duration::from_secs(10), "lag of the held row", || async {
        let lag = metric(
            &http_get(&addr, "/metrics").await.1,
            "outbox_relay_replication_lag_seconds",
        );
        Ok((1.0..30.0).contains(&lag))
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), "agg-a reclaimed and sent", || async {
        Ok(f.count("sent").await == 3)
    })
    .await
    .unwrap();
    let a_sent = claimed.elapsed();
    assert!(
        a_sent >= Duration::from_millis(7800),
        "reclaimed before --poll-stale-secs: {a_sent:?}"
    );
    let rows = f.row_ids().await;
    f.wait_records(3).await;
    assert_eq!(assert_delivered(&f, &rows), 0);
    assert!(
        relay
            .log_text()
            .contains("reclaimed 1 rows a dead poller left in processing")
    );
    println!(
        "poll: held row reclaimed {a_sent:?} after its claim (--poll-stale-secs 8); free aggregate sent after {b_sent:?}"
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_as_a_role_without_replication_that_the_cdc_relay_refuses() {
    let f = Fixture::new(2).await;
    // The application's own role, as on a managed service: owns its tables, no REPLICATION.
    let role = unique_name("app");
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'pw' NOREPLICATION NOSUPERUSER"),
        format!("ALTER TABLE outbox_events OWNER TO {role}"),
        format!("GRANT SELECT, INSERT ON outbox_parked_aggregates TO {role}"),
    ] {
        sqlx::query(&sql).execute(&f.db.pool).await.unwrap();
    }
    let url = f.db.url.replacen("postgres:postgres@", &format!("{role}:pw@"), 1);
    f.insert("agg", 0, 20).await;

    let cdc = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args(["run", "--database-url", &url, "--slot-name", &f.slot])
        .args([
            "--kafka-bootstrap-servers",
            &f.kafka,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cdc.stderr);
    assert_eq!(cdc.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("role {role} lacks the REPLICATION attribute")),
        "{stderr}"
    );

    // Without CREATE on the schema the role cannot build the poll index: one line with the fix.
    let mut refused = poller_as(&f, &url);
    let status = refused.child.wait().unwrap();
    let log = refused.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("cannot create index outbox_events_poll_idx: permission denied for schema public")
            && errors[0].contains("CREATE INDEX CONCURRENTLY"),
        "{}",
        errors[0]
    );
    sqlx::query(&format!("GRANT CREATE ON SCHEMA public TO {role}"))
        .execute(&f.db.pool)
        .await
        .unwrap();

    let relay = poller_as(&f, &url);
    f.wait_all_sent(Duration::from_secs(60)).await;
    f.insert("agg", 20, 20).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    f.wait_records(40).await;
    assert_eq!(assert_delivered(&f, &rows), 0);
    assert!(
        relay.log_text().contains("poll index created"),
        "the owner role builds the index"
    );
    drop(relay);

    for sql in [
        format!("REVOKE CREATE ON SCHEMA public FROM {role}"),
        format!("REASSIGN OWNED BY {role} TO postgres"),
        format!("DROP OWNED BY {role}"),
        format!("DROP ROLE {role}"),
    ] {
        sqlx::query(&sql).execute(&f.db.pool).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_with_wal_level_replica_is_served() {
    let svc = PrivateServices::new();
    svc.services("pg-up");
    let f = Fixture::on(&svc.database_url(), &outbox::testkit::kafka_bootstrap(), 2, &[]).await;
    sqlx::query("ALTER SYSTEM SET wal_level = 'replica'")
        .execute(&f.db.pool)
        .await
        .unwrap();
    f.db.pool.close().await;
    svc.services("pg-down");
    svc.services("pg-up");
    let pool = PgPool::connect(&f.db.url).await.unwrap();
    let wal_level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(wal_level, "replica");
    let relay = poller(&f, &[]);
    let writer = spawn_writer(pool.clone(), 20, 10, 4, Duration::ZERO);
    writer.await.unwrap();
    wait_until(Duration::from_secs(60), "every row sent", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE status <> 'sent'")
            .fetch_one(&pool)
            .await?;
        Ok(left == 0)
    })
    .await
    .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT id::text FROM outbox_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 200);
    f.wait_records(200).await;
    assert_eq!(assert_delivered(&f, &rows), 0);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_event_parks_its_aggregate_in_the_same_and_later_batches() {
    let kafka = outbox::testkit::kafka_bootstrap();
    let f = Fixture::on(
        &outbox::testkit::database_url(),
        &kafka,
        2,
        &[("max.message.bytes", "3000")],
    )
    .await;
    // One batch: a-1 is too large; a-2 is in the same batch behind it.
    insert_one(&f.db.pool, "agg-a", 0, 10).await;
    insert_one(&f.db.pool, "agg-a", 1, 5000).await;
    insert_one(&f.db.pool, "agg-a", 2, 10).await;
    insert_one(&f.db.pool, "agg-b", 0, 10).await;
    insert_one(&f.db.pool, "agg-b", 1, 10).await;
    let relay = poller(&f, &[]);
    wait_until(Duration::from_secs(60), "a failed, a parked, b sent", || async {
        Ok(f.count("failed").await == 2 && f.count("sent").await == 3)
    })
    .await
    .unwrap();
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT publish_attempts, last_error FROM outbox_events WHERE idempotency_key = 'agg-a-1'",
    )
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.to_lowercase().contains("too large"), "last_error: {error}");
    let parked: String =
        sqlx::query_scalar("SELECT last_error FROM outbox_events WHERE idempotency_key = 'agg-a-2'")
            .fetch_one(&f.db.pool)
            .await
            .unwrap();
    assert!(parked.contains("parked"), "{parked}");
    // A later batch: the parked aggregate's event is failed behind it, others flow.
    insert_one(&f.db.pool, "agg-a", 3, 10).await;
    insert_one(&f.db.pool, "agg-b", 2, 10).await;
    wait_until(Duration::from_secs(30), "a-3 parked, b-2 sent", || async {
        Ok(status_of(&f.db.pool, "agg-a-3").await == "failed"
            && status_of(&f.db.pool, "agg-b-2").await == "sent")
    })
    .await
    .unwrap();

    // Fix the cause, republish, and the aggregate flows again through the poller.
    raise_topic_limit(&kafka, &f.topic, "100000").await;
    let out = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args(["republish", "--database-url", &f.db.url])
        .args(["--kafka-bootstrap-servers", &kafka, "--kafka-topic", &f.topic])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "republish: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("republished 3 events"), "{stdout}");
    insert_one(&f.db.pool, "agg-a", 4, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    f.wait_records(rows.len()).await;
    assert_delivered(&f, &rows);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_relay_and_poller_of_one_slot_name_never_run_together() {
    let f = Fixture::new(2).await;
    let mut cdc = f.relay(&[]);
    f.insert("agg", 0, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let poll = poller(&f, &[]);
    wait_until(Duration::from_secs(20), "the poller standing by", || async {
        Ok(poll.log_text().contains("standing by"))
    })
    .await
    .unwrap();
    assert!(!poll.log_text().contains("polling outbox_events"));
    cdc.kill9();
    wait_until(Duration::from_secs(20), "the poller leading", || async {
        Ok(poll.log_text().contains("polling outbox_events"))
    })
    .await
    .unwrap();
    f.insert("agg", 10, 10).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let rows = f.row_ids().await;
    f.wait_records(20).await;
    assert_delivered(&f, &rows);
    drop(poll);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_readiness_and_sigterm_drain() {
    let f = Fixture::new(2).await;
    let mut relay = poller(&f, &[]);
    wait_until(Duration::from_secs(10), "metrics address", || async {
        Ok(metrics_addr(&relay.log_text()).is_some())
    })
    .await
    .unwrap();
    let addr = metrics_addr(&relay.log_text()).unwrap();
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    wait_until(Duration::from_secs(30), "ready", || async {
        Ok(http_get(&addr, "/readyz").await.0 == 200)
    })
    .await
    .unwrap();
    f.insert("agg", 0, 300).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    let body = http_get(&addr, "/metrics").await.1;
    assert_eq!(metric(&body, "outbox_relay_events_published_total"), 300.0);
    assert_eq!(metric(&body, "outbox_relay_leader"), 1.0);
    assert_eq!(metric(&body, "outbox_relay_commit_to_ack_seconds_count"), 300.0);
    assert_eq!(metric(&body, "outbox_relay_rows_marked_sent_total"), 300.0);
    assert_eq!(metric(&body, "outbox_relay_events_in_flight"), 0.0);
    assert!(metric(&body, "outbox_relay_rows_not_sent") >= 0.0);
    // Idle: nothing unsent, no lag.
    wait_until(Duration::from_secs(10), "lag back to 0", || async {
        Ok(metric(
            &http_get(&addr, "/metrics").await.1,
            "outbox_relay_replication_lag_seconds",
        ) == 0.0)
    })
    .await
    .unwrap();

    // SIGTERM while a backlog is being published: the batch in flight finishes, nothing is
    // left `processing`, exit 0; the next poller publishes the rest.
    f.insert("agg", 300, 20_000).await;
    wait_until(Duration::from_secs(30), "publishing", || async {
        Ok(f.count("sent").await > 2_000)
    })
    .await
    .unwrap();
    let status = relay.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", relay.log_text());
    assert!(relay.log_text().contains("drained"), "{}", relay.log_text());
    assert_eq!(f.count("processing").await, 0, "a drained poller holds nothing");
    let sent_at_stop = f.count("sent").await;
    let relay = poller(&f, &[]);
    f.wait_all_sent(Duration::from_secs(120)).await;
    let rows = f.row_ids().await;
    f.wait_records(rows.len()).await;
    let duplicates = assert_delivered(&f, &rows);
    assert_eq!(duplicates, 0, "a drained stop re-sends nothing");
    println!("poll: SIGTERM after {sent_at_stop} of 20300 rows: drained, exit 0, 0 duplicates");
    drop(relay);
}
