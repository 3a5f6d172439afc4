//! Kafka over SASL_SSL, on a private broker (a CA and broker certificate made with openssl at
//! start, SCRAM users created when its storage is formatted): with a wrong password the relay is
//! not ready, says so in a few clear lines and marks nothing sent; with the right one the relay
//! publishes every row (SCRAM-SHA-512) and the consumer applies them (PLAIN), both through the
//! TLS listener only.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Fixture, Relay, assert_delivered, http_get, metrics_addr};
use outbox::testkit::{PrivateServices, database_url, unique_name, wait_until};

/// `relay-cdc run` for the fixture's database and topic, on `bootstrap` with `kafka_config`.
fn relay(f: &Fixture, bootstrap: &str, kafka_config: &str) -> Relay {
    let log = std::env::temp_dir().join(format!("{}.log", unique_name(&f.slot)));
    let child = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .arg("run")
        .args(["--database-url", &f.db.url, "--slot-name", &f.slot])
        .args(["--kafka-bootstrap-servers", bootstrap, "--kafka-topic", &f.topic])
        .args(["--kafka-config", kafka_config])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Relay { child, log }
}

/// The consumer's `run` settings, parsed as its command line would be.
#[derive(Parser)]
struct ConsumerCli {
    #[command(flatten)]
    run: consumer::RunConfig,
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_and_consumer_move_events_over_sasl_ssl_and_a_wrong_password_is_reported_once() {
    let services = PrivateServices::with_kafka_sasl();
    services.services("kafka-up");
    let sasl = services.kafka_sasl.clone().unwrap();
    // The topic is made and read back (kcat) on the broker's plaintext listener.
    let f = Fixture::on(&database_url(), &services.kafka_bootstrap(), 3, &[]).await;
    for agg in ["g1", "g2", "g3"] {
        f.insert(agg, 0, 40).await;
    }

    // A wrong password: not ready for 30 s, a few clear lines, nothing sent, no password logged.
    let wrong = format!("wrong-{}", unique_name("pw"));
    let mut r = relay(
        &f,
        &sasl.bootstrap(),
        &sasl.client_config("SCRAM-SHA-512", &wrong),
    );
    let started = Instant::now();
    let mut addr = None;
    wait_until(Duration::from_secs(30), "the relay's /metrics address", || {
        addr = metrics_addr(&r.log_text());
        let found = addr.is_some();
        async move { Ok(found) }
    })
    .await
    .unwrap();
    let addr = addr.unwrap();
    while started.elapsed() < Duration::from_secs(30) {
        let (status, _) = http_get(&addr, "/readyz").await;
        assert_eq!(status, 503, "ready with a wrong Kafka password");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = r.log_text();
    r.terminate();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the credentials"))
        .collect();
    assert!(
        !refused.is_empty() && refused.len() <= 3,
        "expected one clear error (at most 3 in 30 s), got {}:\n{log}",
        refused.len()
    );
    assert!(
        refused[0].contains("ERROR") && refused[0].contains("RELAY_KAFKA_CONFIG"),
        "{}",
        refused[0]
    );
    let noisy = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(noisy <= 12, "{noisy} warning/error lines in 30 s:\n{log}");
    assert!(
        !log.contains(&wrong) && !log.contains(&sasl.password),
        "a password in the log:\n{log}"
    );
    assert_eq!(f.count("sent").await, 0);

    // The right password: every row goes out over SASL_SSL and is marked sent.
    let t = Instant::now();
    let r = relay(
        &f,
        &sasl.bootstrap(),
        &sasl.client_config("SCRAM-SHA-512", &sasl.password),
    );
    f.wait_all_sent(Duration::from_secs(90)).await;
    eprintln!("relay over SASL_SSL: 120 rows sent in {:?}", t.elapsed());
    assert_eq!(assert_delivered(&f, &f.row_ids().await), 0, "no duplicates");
    assert!(!r.log_text().contains(&sasl.password), "the password in the log");

    // The consumer reads them through SASL_SSL (PLAIN) and records each one in PostgreSQL.
    let t = Instant::now();
    let plain = sasl.client_config("PLAIN", &sasl.password);
    let group = unique_name("sasl");
    let cli = ConsumerCli::try_parse_from([
        "consumer",
        "--database-url",
        &f.db.url,
        "--kafka-bootstrap-servers",
        &sasl.bootstrap(),
        "--kafka-topic",
        &f.topic,
        "--kafka-consumer-group",
        &group,
        "--kafka-config",
        &plain,
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    let service = consumer::Service::start(cli.run).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    wait_until(Duration::from_secs(90), "120 events consumed", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM consumed_events")
            .fetch_one(&f.db.pool)
            .await?;
        Ok(n == 120)
    })
    .await
    .unwrap();
    eprintln!("consumer over SASL_SSL: 120 events recorded in {:?}", t.elapsed());
    let _ = stop.send(());
    task.await.unwrap();
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events o WHERE NOT EXISTS
           (SELECT 1 FROM consumed_events c WHERE c.event_id = o.id)",
    )
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(missing, 0, "every published row is recorded by the consumer");
}
