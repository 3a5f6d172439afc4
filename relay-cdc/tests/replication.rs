//! The replication transport against the real PostgreSQL 15 cluster (`scripts/services up`).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::FutureExt;
use outbox::testkit::{TestDb, unique_name, wait_until};
use relay_cdc::lsn::Lsn;
use relay_cdc::replication::{ReplicationClient, ReplicationError, ReplicationEvent, ReplicationStream};
use uuid::Uuid;

const PGOUTPUT: &[(&str, &str)] = &[
    ("proto_version", "1"),
    ("publication_names", "outbox_pub"),
    ("messages", "true"),
];

/// Runs a test body that owns `slot`, then drops the slot whatever happened: slots pin WAL in
/// the shared cluster.
async fn with_slot<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(TestDb, String) -> Fut,
    Fut: Future<Output = anyhow::Result<TestDb>>,
{
    let db = TestDb::new().await?;
    let (url, slot) = (db.url.clone(), unique_name("slot"));
    // A failed assert! must not skip the cleanup.
    let result = AssertUnwindSafe(body(db, slot.clone())).catch_unwind().await;
    let pool = sqlx::PgPool::connect(&url).await?;
    // The walsender releases the slot shortly after its connection closes.
    wait_until(Duration::from_secs(20), "slot released", || async {
        let active: Option<bool> =
            sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
                .bind(&slot)
                .fetch_optional(&pool)
                .await?;
        Ok(active != Some(true))
    })
    .await?;
    sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
        .bind(&slot)
        .execute(&pool)
        .await?;
    match result {
        Ok(result) => result.map(drop),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn insert_event(db: &TestDb, aggregate_id: &str, payload_bytes: usize) -> anyhow::Result<Uuid> {
    Ok(sqlx::query_scalar(
        "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload)
         VALUES ('test.happened', 'test', $1, jsonb_build_object('pad', repeat('x', $2)))
         RETURNING id",
    )
    .bind(aggregate_id)
    .bind(payload_bytes as i32)
    .fetch_one(&db.pool)
    .await?)
}

async fn next_event(stream: &mut ReplicationStream) -> anyhow::Result<ReplicationEvent> {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .context("no replication message within 30 s")??
        .context("the server ended the stream")
}

fn contains(data: &[u8], needle: &str) -> bool {
    data.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn confirmed_flush(db: &TestDb, slot: &str) -> anyhow::Result<Lsn> {
    let lsn: Option<String> =
        sqlx::query_scalar("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_one(&db.pool)
            .await?;
    Ok(lsn.context("slot has no confirmed_flush_lsn")?.parse()?)
}

async fn wal_sender_timeout(db: &TestDb) -> anyhow::Result<Duration> {
    let ms: i32 =
        sqlx::query_scalar("SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'")
            .fetch_one(&db.pool)
            .await?;
    ensure!(
        ms > 0,
        "wal_sender_timeout is disabled: keepalive tests prove nothing"
    );
    Ok(Duration::from_millis(ms as u64))
}

/// The URL of the test database with another role or password.
fn url_as(db: &TestDb, user: Option<&str>, password: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(&db.url)?;
    if let Some(user) = user {
        url.set_username(user)
            .map_err(|()| anyhow::anyhow!("set_username"))?;
    }
    url.set_password(Some(password))
        .map_err(|()| anyhow::anyhow!("set_password"))?;
    Ok(url.into())
}

#[tokio::test]
async fn connects_and_identifies_the_system() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut client = ReplicationClient::connect(&db.url).await?;
    let info = client.identify_system().await?;
    let (system_id, current): (i64, String) =
        sqlx::query_as("SELECT system_identifier, pg_current_wal_flush_lsn()::text FROM pg_control_system()")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(info.system_id, system_id as u64);
    assert_eq!(info.dbname.as_deref(), Some(db.name.as_str()));
    assert!(info.timeline >= 1);
    assert!(info.xlogpos > Lsn::INVALID && info.xlogpos <= current.parse()?);
    Ok(())
}

/// The whole happy path of the relay: slot with an exported snapshot, the snapshot imported
/// elsewhere, stream from the consistent point, confirm, end the stream, drop the slot.
#[tokio::test]
async fn exported_snapshot_stream_and_confirm() -> anyhow::Result<()> {
    with_slot(|db, slot| async move {
        let before = insert_event(&db, "before", 10).await?;
        let mut client = ReplicationClient::connect(&db.url).await?;
        let created = client.create_logical_slot(&slot, "pgoutput", true).await?;
        let snapshot = created.snapshot_name.clone().context("no snapshot exported")?;
        assert!(created.consistent_point > Lsn::INVALID);

        // Committed after the slot: not in the snapshot, so it must come through the stream.
        let during = insert_event(&db, "during", 10).await?;
        let mut tx = db.pool.begin().await?;
        sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
            .execute(&mut *tx)
            .await?;
        let seen: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM outbox_events")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        tx.commit().await?;
        assert_eq!(
            seen,
            HashSet::from([before]),
            "the snapshot sees exactly the rows before the slot"
        );

        let mut stream = client
            .start_replication(&slot, created.consistent_point, PGOUTPUT)
            .await?;
        let after = insert_event(&db, "after", 10).await?;
        sqlx::query("SELECT pg_logical_emit_message(true, 'outbox', '{\"via\":\"message\"}')")
            .execute(&db.pool)
            .await?;

        let (mut kinds, mut ids, mut last_commit_end) = (HashSet::new(), HashSet::new(), Lsn::INVALID);
        while !(ids.contains(&after)
            && kinds.contains(&b'M')
            && kinds.contains(&b'C')
            && last_commit_end.0 > 0)
        {
            let ReplicationEvent::XLogData { wal_start, data, .. } = next_event(&mut stream).await? else {
                continue;
            };
            let kind = *data.first().context("empty XLogData")?;
            ensure!(
                b"BRICM".contains(&kind),
                "unexpected pgoutput message {:?}",
                kind as char
            );
            kinds.insert(kind);
            for id in [before, during, after] {
                if kind == b'I' && contains(&data, &id.to_string()) {
                    ids.insert(id);
                }
            }
            if kind == b'M' {
                ensure!(
                    contains(&data, "outbox") && contains(&data, "message"),
                    "message content"
                );
            }
            if kind == b'C' {
                // Commit: flags, commit LSN, end LSN; the XLogData is stamped with the end LSN.
                let end = Lsn(u64::from_be_bytes(data[10..18].try_into()?));
                assert_eq!(wal_start, end);
                last_commit_end = end;
            }
        }
        assert_eq!(
            ids,
            HashSet::from([during, after]),
            "the stream holds what the snapshot did not"
        );
        assert!(kinds.is_superset(&HashSet::from([b'B', b'R', b'I', b'C', b'M'])));

        assert!(confirmed_flush(&db, &slot).await? < last_commit_end);
        stream
            .send_status(last_commit_end, last_commit_end, last_commit_end, false)
            .await?;
        wait_until(
            Duration::from_secs(10),
            "confirmed_flush_lsn to advance",
            || async { Ok(confirmed_flush(&db, &slot).await? == last_commit_end) },
        )
        .await?;

        let mut client = stream.finish().await?;
        client.drop_slot(&slot, true).await?;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .fetch_one(&db.pool)
            .await?;
        assert_eq!(left, 0);
        Ok(db)
    })
    .await
}

/// With periodic updates switched off, only the answers to the server's reply requests keep
/// an idle stream alive past `wal_sender_timeout`.
#[tokio::test]
async fn idle_stream_answers_keepalives() -> anyhow::Result<()> {
    with_slot(|db, slot| async move {
        let timeout = wal_sender_timeout(&db).await?;
        let mut client = ReplicationClient::connect(&db.url)
            .await?
            .with_status_interval(Duration::from_secs(3600));
        let created = client.create_logical_slot(&slot, "pgoutput", false).await?;
        let mut stream = client
            .start_replication(&slot, created.consistent_point, PGOUTPUT)
            .await?;
        let (mut requested, mut keepalives) = (0, 0);
        let idle_until = tokio::time::Instant::now() + timeout + Duration::from_secs(5);
        while tokio::time::Instant::now() < idle_until {
            match tokio::time::timeout_at(idle_until, stream.next()).await {
                Err(_) => break,
                Ok(event) => match event?.context("the server ended the stream")? {
                    ReplicationEvent::PrimaryKeepalive { reply_requested, .. } => {
                        keepalives += 1;
                        requested += usize::from(reply_requested);
                    }
                    ReplicationEvent::XLogData { .. } => bail!("no WAL was expected from an idle outbox"),
                },
            }
        }
        assert!(
            requested > 0,
            "no keepalive requested a reply within {timeout:?} ({keepalives} keepalives)"
        );
        // Still connected: a new row arrives.
        let id = insert_event(&db, "late", 10).await?;
        loop {
            if let ReplicationEvent::XLogData { data, .. } = next_event(&mut stream).await? {
                if data[0] == b'I' && contains(&data, &id.to_string()) {
                    break;
                }
            }
        }
        stream.finish().await?;
        Ok(db)
    })
    .await
}

/// A consumer that stops reading for longer than `wal_sender_timeout` while the server has
/// megabytes to send must not be disconnected; reading afterwards in a `select!` that drops
/// `next()` whenever it would wait must lose nothing.
#[tokio::test]
async fn backpressure_keeps_the_stream_alive() -> anyhow::Result<()> {
    const ROWS: usize = 20_000;
    with_slot(|db, slot| async move {
        let timeout = wal_sender_timeout(&db).await?;
        let mut client = ReplicationClient::connect(&db.url).await?;
        let created = client.create_logical_slot(&slot, "pgoutput", false).await?;
        let mut stream = client
            .start_replication(&slot, created.consistent_point, PGOUTPUT)
            .await?;
        // ~20 MB of pgoutput in one transaction: far more than the socket buffers hold.
        sqlx::query(
            "INSERT INTO outbox_events (event_type, aggregate_type, aggregate_id, payload)
             SELECT 'test.bulk', 'test', 'bulk-' || i, jsonb_build_object('pad', repeat('x', 1000))
             FROM generate_series(1, $1) AS i",
        )
        .bind(ROWS as i32)
        .execute(&db.pool)
        .await?;
        tokio::time::sleep(timeout + Duration::from_secs(10)).await;

        let (mut inserts, mut cancelled) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "only {inserts} of {ROWS} inserts arrived"
            );
            // The relay's select! pattern: next() is dropped whenever it would wait for bytes.
            let event = tokio::select! {
                biased;
                event = stream.next() => event?.context("the server ended the stream")?,
                () = std::future::ready(()) => {
                    cancelled += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            if let ReplicationEvent::XLogData { data, .. } = event {
                ensure!(
                    b"BRIC".contains(&data[0]),
                    "unexpected pgoutput message {:?}",
                    data[0] as char
                );
                inserts += usize::from(data[0] == b'I');
                if data[0] == b'C' {
                    break;
                }
            }
        }
        assert_eq!(inserts, ROWS);
        println!("{cancelled} next() calls were cancelled waiting for bytes");
        stream.finish().await?;
        Ok(db)
    })
    .await
}

#[tokio::test]
async fn server_errors_carry_sqlstate_and_keep_the_connection() -> anyhow::Result<()> {
    with_slot(|db, slot| async move {
        let mut client = ReplicationClient::connect(&db.url).await?;
        client.create_logical_slot(&slot, "pgoutput", false).await?;
        let exists = client
            .create_logical_slot(&slot, "pgoutput", false)
            .await
            .unwrap_err();
        assert_eq!(exists.sqlstate(), Some("42710"), "{exists}");
        // A command error leaves the connection usable.
        client.identify_system().await?;
        let missing = client
            .start_replication("no_such_slot", Lsn::INVALID, PGOUTPUT)
            .await
            .err()
            .context("started on a missing slot")?;
        assert_eq!(missing.sqlstate(), Some("42704"), "{missing}");
        Ok(db)
    })
    .await
}

#[tokio::test]
async fn wrong_password_is_auth_failed() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let err = ReplicationClient::connect(&url_as(&db, None, "not-the-password")?)
        .await
        .err()
        .context("connected with a wrong password")?;
    match &err {
        ReplicationError::AuthFailed { error, .. } => assert_eq!(error.code, "28P01"),
        other => bail!("expected AuthFailed, got {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn role_without_replication_is_reported() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let role = unique_name("norepl");
    sqlx::query(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
        .execute(&db.pool)
        .await?;
    let result = ReplicationClient::connect(&url_as(&db, Some(&role), "pw")?).await;
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&db.pool)
        .await?;
    match result.err().context("a role without REPLICATION connected")? {
        ReplicationError::NoReplicationPrivilege { user, error } => {
            assert_eq!(user, role);
            assert_eq!(error.code, "42501");
        }
        other => bail!("expected NoReplicationPrivilege, got {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let err = ReplicationClient::connect("postgres://relay:pw@127.0.0.1:1/db")
        .await
        .err();
    assert!(matches!(err, Some(ReplicationError::Connect { .. })), "{err:?}");
}
