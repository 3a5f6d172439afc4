//! Migrations by owner: each binary creates only its own objects and records them in its own
//! history table, next to a host application's `sqlx::migrate!`; 0.1 databases upgrade in place.

use outbox::migrate::{self, ALL, BOT, CONSUMER, RELAY};
use outbox::testkit::{SEED_STEP4_INSERT, TestDb};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// outbox-cdc 0.1: every set in one `_sqlx_migrations`.
static V01: Migrator = sqlx::migrate!("tests/fixtures/migrations-0.1");
/// A host application, and its next release with one more migration.
static HOST_V1: Migrator = sqlx::migrate!("tests/fixtures/host-app/v1");
static HOST_V2: Migrator = sqlx::migrate!("tests/fixtures/host-app/v2");

async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn history(pool: &PgPool, table: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!(
        "SELECT version FROM {table} WHERE success ORDER BY version"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

fn versions(owner: &migrate::Owner) -> Vec<i64> {
    owner.migrator.iter().map(|m| m.version).collect()
}

#[tokio::test]
async fn each_binary_creates_only_what_it_owns() {
    let db = TestDb::empty().await.unwrap();
    assert_eq!(migrate::run(&RELAY, &db.url).await.unwrap(), versions(&RELAY));
    let relay_tables = tables(&db.pool).await;
    assert_eq!(
        relay_tables,
        [
            "_relay_cdc_migrations",
            "outbox_events",
            "outbox_oldest_pending",
            "outbox_parked_aggregates",
            "outbox_pending",
            "outbox_relay_slots",
            "outbox_status_counts",
        ]
    );
    let publication: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'outbox_pub' AND tablename = 'outbox_events'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(publication, 1);

    assert_eq!(
        migrate::run(&CONSUMER, &db.url).await.unwrap(),
        versions(&CONSUMER)
    );
    let consumer_tables: Vec<String> = tables(&db.pool)
        .await
        .into_iter()
        .filter(|t| !relay_tables.contains(t))
        .collect();
    assert_eq!(
        consumer_tables,
        [
            "_consumer_migrations",
            "consumed_events",
            "consumer_results",
            "leaderboard",
            "leaderboard_games",
            "leaderboard_players",
        ]
    );

    let before = tables(&db.pool).await;
    assert_eq!(migrate::run(&BOT, &db.url).await.unwrap(), versions(&BOT));
    let bot_tables: Vec<String> = tables(&db.pool)
        .await
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    assert_eq!(
        bot_tables,
        [
            "_bot_migrations",
            "game_audit",
            "game_snapshots",
            "games",
            "players",
            "processed_updates",
        ]
    );
    for owner in ALL {
        assert_eq!(history(&db.pool, owner.table).await, versions(owner));
        assert!(
            migrate::run(owner, &db.url).await.unwrap().is_empty(),
            "{}: second run",
            owner.name
        );
    }
    assert!(!tables(&db.pool).await.contains(&"_sqlx_migrations".to_string()));
}

/// The host application migrates first, then outbox-cdc, then the host's next release: every
/// history keeps to itself.
#[tokio::test]
async fn a_host_applications_sqlx_migrate_works_before_and_after_ours() {
    let db = TestDb::empty().await.unwrap();
    HOST_V1.run(&db.pool).await.unwrap();
    migrate::run_all(&db.url).await.unwrap();
    HOST_V2.run(&db.pool).await.unwrap();
    HOST_V1.run(&db.pool).await.unwrap_err(); // sqlx's own check still works: v1 lacks v2's version
    assert_eq!(history(&db.pool, "_sqlx_migrations").await, versions_of(&HOST_V2));
    for owner in ALL {
        assert_eq!(history(&db.pool, owner.table).await, versions(owner));
    }
    sqlx::query("INSERT INTO orders (item, amount, note) VALUES ('x', 1, 'n')")
        .execute(&db.pool)
        .await
        .unwrap();
}

/// outbox-cdc first, then the host application.
#[tokio::test]
async fn a_host_applications_sqlx_migrate_works_on_a_database_we_migrated_first() {
    let db = TestDb::empty().await.unwrap();
    migrate::run_all(&db.url).await.unwrap();
    HOST_V1.run(&db.pool).await.unwrap();
    migrate::run_all(&db.url).await.unwrap();
    HOST_V2.run(&db.pool).await.unwrap();
    assert_eq!(history(&db.pool, "_sqlx_migrations").await, versions_of(&HOST_V2));
}

fn versions_of(m: &Migrator) -> Vec<i64> {
    m.iter().map(|m| m.version).collect()
}

#[test]
fn the_legacy_checksums_are_those_of_0_1s_files() {
    let ours: Vec<(i64, String)> = migrate::legacy_checksums()
        .map(|(v, c)| (v, c.to_string()))
        .collect();
    let files: Vec<(i64, String)> = V01
        .iter()
        .map(|m| {
            let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
            (m.version, hex)
        })
        .collect();
    assert_eq!(ours, files);
}

/// A database migrated by 0.1, with data, upgraded by the new `migrate`s: nothing lost, the
/// history moved to the owners' tables, and a host application's sqlx::migrate! works after.
#[tokio::test]
async fn a_database_migrated_by_0_1_upgrades_in_place() {
    let db = TestDb::empty().await.unwrap();
    V01.run(&db.pool).await.unwrap();
    sqlx::raw_sql(SEED_STEP4_INSERT).execute(&db.pool).await.unwrap();
    sqlx::raw_sql(
        "UPDATE outbox_events SET status = 'sent', published_at = now();
         INSERT INTO consumed_events (event_id, event_type, topic, partition, kafka_offset)
             SELECT id, event_type, 'game-events', 0, 7 FROM outbox_events;
         INSERT INTO leaderboard_players (player_id, name, games_played, wins) VALUES ('p1', 'Ann', 3, 2);
         INSERT INTO outbox_parked_aggregates (aggregate_id, first_failed_id, reason)
             VALUES ('agg', gen_random_uuid(), 'too large');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let snapshot = |pool: PgPool| async move {
        let q = "SELECT (SELECT json_agg(t ORDER BY id) FROM outbox_events t)::text,
                        (SELECT json_agg(t) FROM consumed_events t)::text,
                        (SELECT json_agg(t) FROM leaderboard_players t)::text,
                        (SELECT json_agg(t) FROM outbox_parked_aggregates t)::text";
        sqlx::query_as::<_, (String, String, String, String)>(q)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = snapshot(db.pool.clone()).await;
    let tables_before = tables(&db.pool).await;

    // Any one binary's migrate upgrades the whole history (here the relay's alone).
    assert!(migrate::run(&RELAY, &db.url).await.unwrap().is_empty());
    for owner in ALL {
        assert_eq!(
            history(&db.pool, owner.table).await,
            versions(owner),
            "{}",
            owner.name
        );
        assert!(migrate::run(owner, &db.url).await.unwrap().is_empty());
    }
    assert_eq!(snapshot(db.pool.clone()).await, before);
    let mut expected = tables_before.clone();
    expected.retain(|t| t != "_sqlx_migrations");
    expected.extend(ALL.iter().map(|o| o.table.to_string()));
    expected.sort();
    assert_eq!(
        tables(&db.pool).await,
        expected,
        "only the history tables changed"
    );

    // The host application can now use sqlx::migrate! without ignore_missing.
    HOST_V1.run(&db.pool).await.unwrap();
    HOST_V2.run(&db.pool).await.unwrap();
    assert_eq!(history(&db.pool, "_sqlx_migrations").await, versions_of(&HOST_V2));
}

/// A 0.1 database shared with a host application that had to set ignore_missing: our rows leave
/// `_sqlx_migrations`, the application's stay, and its migrate no longer needs ignore_missing.
#[tokio::test]
async fn upgrading_a_shared_0_1_history_keeps_the_applications_rows() {
    let db = TestDb::empty().await.unwrap();
    V01.run(&db.pool).await.unwrap();
    let mut lenient = Migrator::new(std::path::Path::new("tests/fixtures/host-app/v1"))
        .await
        .unwrap();
    lenient.set_ignore_missing(true);
    lenient.run(&db.pool).await.unwrap();
    assert!(
        HOST_V1.run(&db.pool).await.is_err(),
        "0.1's rows trip a strict sqlx::migrate!"
    );

    migrate::run(&CONSUMER, &db.url).await.unwrap();
    assert_eq!(history(&db.pool, "_sqlx_migrations").await, versions_of(&HOST_V1));
    HOST_V2.run(&db.pool).await.unwrap();
    for owner in ALL {
        assert_eq!(history(&db.pool, owner.table).await, versions(owner));
    }
}

/// `relay-cdc schema` for teams with their own migration tool: applying its SQL by hand gives
/// the outbox the relay needs.
#[tokio::test]
async fn the_printed_schema_creates_the_outbox() {
    let db = TestDb::empty().await.unwrap();
    let sql = migrate::schema_sql(&RELAY);
    sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
    let t = tables(&db.pool).await;
    for name in [
        "outbox_events",
        "outbox_relay_slots",
        "outbox_parked_aggregates",
        "outbox_pending",
    ] {
        assert!(t.contains(&name.to_string()), "{name} missing: {t:?}");
    }
    assert!(!t.iter().any(|t| t == "consumed_events" || t == "games"));
    sqlx::raw_sql(SEED_STEP4_INSERT).execute(&db.pool).await.unwrap();
}
