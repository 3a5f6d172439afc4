//! Output settings a database or a role overrides (`ALTER DATABASE/ROLE ... SET DateStyle ...`)
//! must not change what the relay reads from pgoutput's text, nor what it publishes.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use crate::report::case;

/// Every setting that changes the text form of a value, with a value far from the default.
const DATABASE_OVERRIDES: &[(&str, &str)] = &[
    ("DateStyle", "SQL, DMY"),
    ("TimeZone", "America/St_Johns"), // -03:30, and local mean time before 1900
    ("IntervalStyle", "sql_standard"),
    ("extra_float_digits", "-15"),
    ("bytea_output", "escape"),
];
const ROLE_OVERRIDES: &[(&str, &str)] = &[
    ("DateStyle", "German, DMY"),
    ("TimeZone", "Asia/Kathmandu"), // +05:45
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "0"),
    ("bytea_output", "escape"),
];

/// created_at values that exercise fractions, none, and offsets with seconds.
const STAMPS: &[&str] = &[
    "2026-11-29 03:00:00.5+00",
    "2026-11-29 03:00:00+00",
    "1999-12-31 23:59:59.999999+00",
    "1890-01-01 00:00:00+00",
];

/// Rows (backlog and live) published by a relay whose database, then
/// whose role, overrides each output setting: every envelope's created_at and payload equal
/// the row's, no row is marked failed.
#[tokio::test(flavor = "multi_thread")]
async fn database_and_role_output_settings_change_nothing() {
    case("settings-overridden", async {
        let f = Fixture::new(1).await;
        let db = f.db.name.clone();
        for (k, v) in DATABASE_OVERRIDES {
            exec(&f, &format!("ALTER DATABASE {db} SET {k} = '{v}'")).await;
        }
        // The overrides are real: a fresh session of this database shows them.
        let shown = show(&f.db.url, "DateStyle").await;
        anyhow::ensure!(shown == "SQL, DMY", "database override not in effect: {shown}");

        // Database level: the backlog (read with SQL) and live rows (read from pgoutput).
        insert_stamped(&f, "db-backlog").await;
        let mut relay = f.relay(&[]);
        insert_stamped(&f, "db-live").await;
        f.wait_all_sent(Duration::from_secs(60)).await;
        let first = check_published(&f).await?;
        anyhow::ensure!(relay.terminate().success(), "relay exit status");

        // Role level, on a dedicated role with its own per-database settings.
        let role = outbox::testkit::unique_name("relay_role");
        exec(&f, &format!("CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw'")).await;
        exec(&f, &format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")).await;
        exec(&f, &format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")).await;
        for (k, v) in ROLE_OVERRIDES {
            exec(&f, &format!("ALTER ROLE {role} IN DATABASE {db} SET {k} = '{v}'")).await;
        }
        let role_url = with_user(&f.db.url, &role, "pw");
        let shown = show(&role_url, "TimeZone").await;
        let result = async {
            anyhow::ensure!(shown == "Asia/Kathmandu", "role override not in effect: {shown}");
            let mut relay = f.relay_as(&role_url, &[]);
            insert_stamped(&f, "role-live").await;
            f.wait_all_sent(Duration::from_secs(60)).await;
            let second = check_published(&f).await?;
            anyhow::ensure!(relay.terminate().success(), "relay exit status");
            Ok(second)
        }
        .await;
        exec(&f, &format!("DROP OWNED BY {role}")).await;
        let _ = sqlx::query(&format!("DROP ROLE {role}"))
            .execute(&f.db.pool)
            .await;
        let second = result?;
        Ok(format!(
            "database overrides ({}) then role overrides ({}): {first} then {second} envelopes, created_at and payload equal to the rows' (fractions, none, 1890 local mean time), 0 failed",
            names(DATABASE_OVERRIDES),
            names(ROLE_OVERRIDES)
        ))
    })
    .await;
}

fn names(settings: &[(&str, &str)]) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn exec(f: &Fixture, sql: &str) {
    sqlx::query(sql).execute(&f.db.pool).await.unwrap();
}

/// The setting as a plain session of `url` sees it (psql sets none of these itself; sqlx does).
async fn show(url: &str, setting: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-XAtc", &format!("SHOW {setting}")])
        .env_remove("PGDATESTYLE")
        .env_remove("PGTZ")
        .env_remove("PGOPTIONS")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `url` with another user and password.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (_, host) = rest.split_once('@').unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

/// One row per stamp for `aggregate`, with a float, bytes and an interval in the payload.
async fn insert_stamped(f: &Fixture, aggregate: &str) {
    for (i, stamp) in STAMPS.iter().enumerate() {
        sqlx::query(
            "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload, created_at, idempotency_key)
             VALUES ('test.event', 'game', $1,
                     jsonb_build_object('seq', $2::int, 'float', 0.1::float8 * 3, 'bytes', encode('\\x00ff'::bytea, 'base64'),
                                        'interval', '1 day 02:03:04'::interval::text),
                     $3::timestamptz, $1 || '-' || $2)",
        )
        .bind(aggregate)
        .bind(i as i32)
        .bind(stamp)
        .execute(&f.db.pool)
        .await
        .unwrap();
    }
}

/// Every row in Kafka with the created_at (to the microsecond) and payload the database holds.
async fn check_published(f: &Fixture) -> anyhow::Result<usize> {
    let rows: Vec<(uuid::Uuid, i64, serde_json::Value)> = sqlx::query_as(
        "SELECT id, (extract(epoch FROM created_at) * 1000000)::bigint, payload FROM outbox_events",
    )
    .fetch_all(&f.db.pool)
    .await?;
    let failed = f.count("failed").await;
    anyhow::ensure!(failed == 0, "{failed} rows marked failed");
    let records = f.wait_records(rows.len()).await;
    let published: HashMap<String, serde_json::Value> = records
        .iter()
        .map(|r| {
            (
                outbox::testkit::event_id(r),
                serde_json::from_str(&r.value).unwrap(),
            )
        })
        .collect();
    for (id, micros, payload) in &rows {
        let e = published
            .get(&id.to_string())
            .ok_or_else(|| anyhow::anyhow!("row {id} not in Kafka"))?;
        let at: chrono::DateTime<chrono::Utc> = e["created_at"].as_str().unwrap_or_default().parse()?;
        anyhow::ensure!(
            at.timestamp_micros() == *micros,
            "row {id}: published created_at {at}, the row holds {micros} µs since the epoch"
        );
        anyhow::ensure!(
            &e["payload"] == payload,
            "row {id}: payload {} vs {payload}",
            e["payload"]
        );
    }
    Ok(rows.len())
}
