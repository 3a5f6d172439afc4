//! Startup checks, operations endpoints and operator commands of relay-cdc.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use outbox::testkit::{PrivateServices, TestDb, unique_name, wait_until};

fn relay_cdc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `relay-cdc run` against `url`, expecting it to stop at once with one error line.
fn run_expecting_error(url: &str, slot: &str) -> String {
    let out = relay_cdc(&[
        "run",
        "--database-url",
        url,
        "--slot-name",
        slot,
        "--kafka-bootstrap-servers",
        &outbox::testkit::kafka_bootstrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_misconfiguration_gives_one_clear_line() {
    let db = TestDb::new().await.unwrap();
    let slot = unique_name("slot");

    let bad_password = db.url.replacen("postgres:postgres@", "postgres:wrong@", 1);
    let line = run_expecting_error(&bad_password, &slot);
    assert!(
        line.contains("password authentication failed for user postgres: fix the password in DATABASE_URL"),
        "{line}"
    );

    // Nothing listens there; a URL of another database.
    let line = run_expecting_error("postgres://postgres:postgres@127.0.0.1:1/x", &slot);
    assert!(
        line.contains("cannot connect to PostgreSQL: 127.0.0.1:1 (from DATABASE_URL): ")
            && !line.contains("pool timed out"),
        "{line}"
    );
    let line = run_expecting_error("mysql://root:pw@127.0.0.1:3306/app", &slot);
    assert!(
        line.contains("DATABASE_URL must be a PostgreSQL URL") && line.contains("mysql"),
        "{line}"
    );

    // A role that may log in but lacks REPLICATION.
    let role = unique_name("norepl");
    sqlx::query(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
        .execute(&db.pool)
        .await
        .unwrap();
    let as_role = db.url.replacen("postgres:postgres@", &format!("{role}:pw@"), 1);
    let line = run_expecting_error(&as_role, &slot);
    assert!(
        line.contains(&format!(
            "role {role} lacks the REPLICATION attribute: ALTER ROLE {role} REPLICATION"
        )),
        "{line}"
    );

    // A slot of that name with another plugin.
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(&slot)
        .execute(&db.pool)
        .await
        .unwrap();
    let line = run_expecting_error(&db.url, &slot);
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        line.contains(&format!(
            "replication slot {slot} uses plugin test_decoding, not pgoutput"
        )),
        "{line}"
    );

    sqlx::query("ALTER PUBLICATION outbox_pub DROP TABLE outbox_events")
        .execute(&db.pool)
        .await
        .unwrap();
    let line = run_expecting_error(&db.url, &slot);
    assert!(line.contains("publication outbox_pub does not cover outbox_events: ALTER PUBLICATION outbox_pub ADD TABLE outbox_events"), "{line}");

    sqlx::query("DROP PUBLICATION outbox_pub")
        .execute(&db.pool)
        .await
        .unwrap();
    let line = run_expecting_error(&db.url, &slot);
    assert!(
        line.contains("publication outbox_pub does not exist: run `relay-cdc migrate`"),
        "{line}"
    );

    // A database that was never migrated.
    let empty = unique_name("empty");
    sqlx::query(&format!("CREATE DATABASE {empty}"))
        .execute(&db.pool)
        .await
        .unwrap();
    let line = run_expecting_error(&db.url.replace(&db.name, &empty), &slot);
    assert!(
        line.contains("table outbox_events does not exist in this database: run `relay-cdc migrate` first"),
        "{line}"
    );

    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&db.pool)
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_replica_is_refused_with_the_fix() {
    let svc = PrivateServices::new();
    svc.services("pg-up");
    let db = TestDb::create_in(&svc.database_url()).await.unwrap();
    sqlx::query("ALTER SYSTEM SET wal_level = 'replica'")
        .execute(&db.pool)
        .await
        .unwrap();
    db.pool.close().await;
    svc.services("pg-down");
    svc.services("pg-up");
    let line = run_expecting_error(&db.url, "outbox_slot");
    assert!(
        line.contains("wal_level is 'replica', logical replication needs 'logical': set wal_level = logical"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_unreachable_at_start_is_waited_for_with_readiness_false() {
    let svc = PrivateServices::new();
    let mut f = Fixture::new(1).await;
    // Point the relay at the private broker's port before that broker exists.
    let bootstrap = svc.kafka_bootstrap();
    f.kafka = bootstrap.clone();
    let relay = f.relay(&[]);
    f.insert("agg", 0, 5).await;
    wait_until(
        Duration::from_secs(30),
        "the relay to say Kafka is unreachable",
        || async { Ok(relay.log_text().contains("Kafka is unreachable; retrying")) },
    )
    .await
    .unwrap();
    let addr = metrics_addr(&relay.log_text()).expect("metrics address in the log");
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    assert_eq!(http_get(&addr, "/readyz").await.0, 503);
    svc.services("kafka-up");
    // The relay publishes once the broker is there (it creates the topic on first use).
    f.wait_all_sent(Duration::from_secs(90)).await;
    assert_eq!(f.wait_records(5).await.len(), 5);
    wait_until(Duration::from_secs(10), "ready", || async {
        Ok(http_get(&addr, "/readyz").await.0 == 200)
    })
    .await
    .unwrap();
    drop(relay);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_readiness_and_status() {
    let f = Fixture::new(2).await;
    let relay = f.relay(&[]);
    wait_until(Duration::from_secs(10), "metrics address", || async {
        Ok(metrics_addr(&relay.log_text()).is_some())
    })
    .await
    .unwrap();
    let addr = metrics_addr(&relay.log_text()).unwrap();
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    // Ready once streaming: events written from now on have a commit time to measure from.
    wait_until(Duration::from_secs(30), "ready", || async {
        Ok(http_get(&addr, "/readyz").await.0 == 200)
    })
    .await
    .unwrap();
    f.insert("agg", 0, 300).await;
    f.wait_all_sent(Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(10), "published counter", || async {
        Ok(metric(
            &http_get(&addr, "/metrics").await.1,
            "outbox_relay_events_published_total",
        ) >= 300.0)
    })
    .await
    .unwrap();
    let body = http_get(&addr, "/metrics").await.1;
    assert_eq!(metric(&body, "outbox_relay_events_published_total"), 300.0);
    assert_eq!(metric(&body, "outbox_relay_leader"), 1.0);
    assert_eq!(metric(&body, "outbox_relay_commit_to_ack_seconds_count"), 300.0);
    assert!(metric(&body, "outbox_relay_replication_lag_bytes") >= 0.0);
    assert!(metric(&body, "outbox_relay_replication_lag_seconds") >= 0.0);
    assert!(metric(&body, "outbox_relay_events_in_flight") >= 0.0);
    assert!(metric(&body, "outbox_relay_rows_not_sent") >= 0.0);
    assert!(metric(&body, "outbox_relay_rows_marked_sent_total") >= 300.0);

    let out = relay_cdc(&["status", "--database-url", &f.db.url, "--slot-name", &f.slot]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in [
        &format!("slot {}:", f.slot),
        "active:              true (pid",
        "confirmed_flush_lsn:",
        "lag_bytes:",
        "wal_status:          reserved",
        "sent        300",
        "oldest pending age:",
    ] {
        assert!(text.contains(needle), "status lacks {needle:?}:\n{text}");
    }
    let out = relay_cdc(&[
        "slot",
        "drop",
        "--database-url",
        &f.db.url,
        "--slot-name",
        &f.slot,
    ]);
    assert!(!out.status.success(), "dropping an active slot is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running relay"));
    drop(relay);
}
