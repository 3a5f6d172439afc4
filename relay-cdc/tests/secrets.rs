//! Secrets stay out of `--help` and logs; logs are plain text when piped, JSON on request.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Fixture;
use outbox::testkit::{help_pages_showing, unique_name};

#[test]
fn help_of_every_subcommand_hides_the_database_and_kafka_passwords() {
    let env = [
        ("DATABASE_URL", "postgres://relay:Db-Pw-4711@db.example:5432/app"),
        (
            "RELAY_KAFKA_CONFIG",
            "security.protocol=SASL_SSL,sasl.username=u,sasl.password=Kafka-Pw-4711,ssl.key.password=Key-Pw-4711",
        ),
    ];
    let (pages, leaking) = help_pages_showing(
        env!("CARGO_BIN_EXE_relay-cdc"),
        &env,
        &["Db-Pw-4711", "Kafka-Pw-4711", "Key-Pw-4711"],
    );
    // relay-cdc, run, migrate, status, republish, slot, slot drop.
    assert!(pages >= 7, "only {pages} help pages found");
    assert!(leaking.is_empty(), "secrets shown by: {leaking:?}");
}

#[test]
fn a_bad_kafka_property_is_one_line_naming_it_without_its_value() {
    for (config, expected) in [
        ("sasl.pasword=Typo-Pw-4711", "sasl.pasword"),
        ("sasl.username=u,sasl.password=a,b-Pw-4711", "after sasl.password"),
        ("acks=1", "acks may not be set here"),
    ] {
        outbox::testkit::assert_refused_in_one_line(
            env!("CARGO_BIN_EXE_relay-cdc"),
            &[
                "run",
                "--database-url",
                "postgres://127.0.0.1:1/none",
                "--kafka-config",
                config,
            ],
            2,
            "RELAY_KAFKA_CONFIG",
            expected,
            "Pw-4711",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn piped_logs_have_no_colour_codes_and_json_logs_parse() {
    let f = Fixture::new(1).await;
    f.insert("agg", 0, 20).await;
    let mut text = f.relay(&[]);
    f.wait_all_sent(Duration::from_secs(60)).await;
    text.terminate();
    let log = text.log_text();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a piped log:\n{log}");

    // The same relay, asked for JSON: every line is an object with a level and a message.
    f.insert("agg", 20, 5).await;
    let path = std::env::temp_dir().join(format!("{}.json.log", unique_name("relay")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .arg("run")
        .args(["--database-url", &f.db.url, "--slot-name", &f.slot])
        .args(["--kafka-bootstrap-servers", &f.kafka, "--kafka-topic", &f.topic])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,outbox=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&path).unwrap())
        .spawn()
        .unwrap();
    f.wait_all_sent(Duration::from_secs(60)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    // The start-up debug line names librdkafka's features.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"features\"") && l.contains("sasl_scram")),
        "no librdkafka features line:\n{log}"
    );
}

#[test]
fn under_log_format_json_the_closing_error_is_json_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay-cdc"))
        .args([
            "run",
            "--database-url",
            "postgres://127.0.0.1:1/none",
            "--kafka-config",
            "acks=1",
        ])
        .env("LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(v["level"], "ERROR");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("acks may not be set here"),
        "{v}"
    );
}
