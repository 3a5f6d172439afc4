//! The SQL migrations, one set per owner, each with its own history table.
//!
//! `relay-cdc migrate` applies [`RELAY`] (the outbox: `outbox_events`, its views, the publication,
//! the relay's bookkeeping), `consumer migrate` applies [`CONSUMER`] (`consumed_events` and the
//! leaderboard handler's tables), `bot migrate` applies [`BOT`] (the game). Each set records what
//! it applied in its own table (`_relay_cdc_migrations`, ...), never in sqlx's `_sqlx_migrations`,
//! so an application's own `sqlx::migrate!` on the same database sees only its own versions.
//!
//! sqlx 0.8's `Migrator` hard-codes `_sqlx_migrations`, so the sets are embedded with
//! `sqlx::migrate!` (files, checksums) and applied here: one transaction per migration together
//! with its history row, under an advisory lock so concurrent `migrate`s take turns.
//!
//! Databases migrated by 0.1 (every version in one `_sqlx_migrations`) are upgraded in place on
//! the first run of any `migrate`: see [`adopt_legacy`].

use std::time::Instant;

use anyhow::Context;
use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

/// One owner's migration set and the table that records it.
#[derive(Debug)]
pub struct Owner {
    /// The binary that applies it (`relay-cdc`, `consumer`, `bot`), for messages.
    pub name: &'static str,
    /// The history table (same columns as sqlx's `_sqlx_migrations`).
    pub table: &'static str,
    /// The embedded migration files.
    pub migrator: &'static Migrator,
}

/// The outbox: `outbox_events`, its operator views, the publication `outbox_pub`, the relay's
/// slot record and parked aggregates (`migrations/relay/`).
pub static RELAY: Owner = Owner {
    name: "relay-cdc",
    table: "_relay_cdc_migrations",
    migrator: &sqlx::migrate!("../migrations/relay"),
};

/// The consumer: `consumed_events`, `consumer_results` and the leaderboard handler's tables
/// (`migrations/consumer/`).
pub static CONSUMER: Owner = Owner {
    name: "consumer",
    table: "_consumer_migrations",
    migrator: &sqlx::migrate!("../migrations/consumer"),
};

/// The game: `games`, `players`, `game_audit`, `game_snapshots`, `processed_updates`
/// (`migrations/bot/`).
pub static BOT: Owner = Owner {
    name: "bot",
    table: "_bot_migrations",
    migrator: &sqlx::migrate!("../migrations/bot"),
};

/// Every owner, in the order a fresh database is migrated.
pub static ALL: [&Owner; 3] = [&RELAY, &CONSUMER, &BOT];

/// A 0.1 version, its checksum (hex), and the (owner, version) pairs it created.
type Legacy = (i64, &'static str, &'static [(&'static Owner, i64)]);

/// What 0.1 recorded in `_sqlx_migrations` (version, SHA-384 of the file, hex) and which
/// migrations of today's sets each version created. A row is ours only when version and
/// checksum both match: an application's row with the same version is left alone.
const LEGACY: [Legacy; 5] = [
    (
        20261126000001,
        "5ec8366089ae137f072cb79faa184af3d9dbf825ebafd4cc98e2e75ddc3d6630dfa62bf3cf6e71cb8e36ed4ba55e4891",
        &[(&RELAY, 20261126000001), (&CONSUMER, 20261126000001)],
    ),
    (
        20261126000002,
        "6a9e6d7c33d9155404098aa6d61e17d67dfa5076335133a329b6a40ccef6f793a4d0361ff569f3d2ed2adefeaf63fa6d",
        &[(&RELAY, 20261126000002)],
    ),
    (
        20261126000100,
        "2427fa60a366a162ff856e2ddf6b8e72e8d38fd32d9c7a436943cfd71e0af985fbf245c66144bc8f9b86ce65de8af0ab",
        &[(&CONSUMER, 20261126000100)],
    ),
    (
        20261126000200,
        "c6b20753056f731f342a0d98144440a494783562072b3469e60e64cc036c6fdc5c2c340470d25404902b4a2cd52477b0",
        &[(&BOT, 20261126000200)],
    ),
    (
        20261126000300,
        "a5ee8e2e3bfadf0b499ab8ffdcbd6f8618bd71c8d47a8a08c0bed5fb4d5a513f619c94ce695eab03c5e0a73ceb5ab453",
        &[(&RELAY, 20261126000300)],
    ),
];

/// The versions and checksums (hex) 0.1 wrote to `_sqlx_migrations`, for tests.
pub fn legacy_checksums() -> impl Iterator<Item = (i64, &'static str)> {
    LEGACY.iter().map(|(v, c, _)| (*v, *c))
}

/// Session advisory lock held while migrating (any owner): concurrent runs take turns.
const LOCK_KEY: i64 = 0x6f75_7462_6f78_6d69; // "outboxmi"

/// Why a migration run refused to go on.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A recorded migration's file changed since it was applied.
    #[error(
        "{owner}: migration {version} ({description}) was applied from a different file (checksum mismatch in {table}); released migrations never change: restore the file or recreate the database"
    )]
    Modified {
        owner: &'static str,
        table: &'static str,
        version: i64,
        description: String,
    },
    /// The history names a version this binary does not have (a newer release migrated it).
    #[error(
        "{owner}: {table} records migration {version}, which this binary does not know: a newer release migrated this database; run that release"
    )]
    Unknown {
        owner: &'static str,
        table: &'static str,
        version: i64,
    },
}

/// Applies `owner`'s pending migrations; returns the versions applied now.
pub async fn run(owner: &Owner, database_url: &str) -> anyhow::Result<Vec<i64>> {
    let mut conn = PgConnection::connect(database_url)
        .await
        .context("connecting to DATABASE_URL to migrate")?;
    conn.execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_KEY))
        .await
        .context("taking the migration lock")?;
    let result = async {
        adopt_legacy(&mut conn).await?;
        apply(owner, &mut conn).await
    }
    .await;
    let _ = conn
        .execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY))
        .await;
    let _ = conn.close().await;
    result
}

/// Applies every owner's migrations (a fresh database for tests and benchmarks).
pub async fn run_all(database_url: &str) -> anyhow::Result<()> {
    for owner in ALL {
        run(owner, database_url).await?;
    }
    Ok(())
}

/// `owner`'s SQL, every migration in order, for teams that apply schema with their own tool.
pub fn schema_sql(owner: &Owner) -> String {
    let mut out = format!(
        "-- {} schema: {} migration(s). Applied with `{} migrate`, they are recorded in {};\n\
         -- applied by another tool, record them there yourself or keep using that tool.\n",
        owner.name,
        owner.migrator.iter().count(),
        owner.name,
        owner.table
    );
    for m in owner.migrator.iter() {
        out.push_str(&format!(
            "\n-- migration {} ({})\n{}\n",
            m.version,
            m.description,
            m.sql.trim_end()
        ));
    }
    out
}

async fn ensure_table(owner: &Owner, conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.execute(
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version        bigint      PRIMARY KEY,
                description    text        NOT NULL,
                installed_on   timestamptz NOT NULL DEFAULT now(),
                success        boolean     NOT NULL,
                checksum       bytea       NOT NULL,
                execution_time bigint      NOT NULL
            )",
            owner.table
        )
        .as_str(),
    )
    .await
    .with_context(|| format!("creating {}", owner.table))?;
    Ok(())
}

async fn apply(owner: &Owner, conn: &mut PgConnection) -> anyhow::Result<Vec<i64>> {
    ensure_table(owner, conn).await?;
    let recorded: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT version, checksum FROM {} ORDER BY version",
        owner.table
    ))
    .fetch_all(&mut *conn)
    .await?;
    for (version, checksum) in &recorded {
        match owner.migrator.iter().find(|m| m.version == *version) {
            None => {
                return Err(MigrateError::Unknown {
                    owner: owner.name,
                    table: owner.table,
                    version: *version,
                }
                .into());
            }
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                return Err(MigrateError::Modified {
                    owner: owner.name,
                    table: owner.table,
                    version: *version,
                    description: m.description.to_string(),
                }
                .into());
            }
            Some(_) => {}
        }
    }
    let mut applied = Vec::new();
    for m in owner.migrator.iter() {
        if recorded.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        apply_one(owner, m, conn).await.with_context(|| {
            format!(
                "{}: applying migration {} ({})",
                owner.name, m.version, m.description
            )
        })?;
        applied.push(m.version);
    }
    Ok(applied)
}

async fn apply_one(owner: &Owner, m: &Migration, conn: &mut PgConnection) -> anyhow::Result<()> {
    let started = Instant::now();
    let record = format!(
        "INSERT INTO {} (version, description, success, checksum, execution_time)
         VALUES ($1, $2, true, $3, $4)",
        owner.table
    );
    if m.no_tx {
        conn.execute(m.sql.as_ref()).await?;
        record_one(&record, m, started, &mut *conn).await
    } else {
        let mut tx = conn.begin().await?;
        tx.execute(m.sql.as_ref()).await?;
        record_one(&record, m, started, &mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn record_one(
    record: &str,
    m: &Migration,
    started: Instant,
    conn: &mut PgConnection,
) -> anyhow::Result<()> {
    sqlx::query(record)
        .bind(m.version)
        .bind(m.description.as_ref())
        .bind(m.checksum.as_ref())
        .bind(started.elapsed().as_nanos() as i64)
        .execute(conn)
        .await?;
    Ok(())
}

/// Upgrades a database migrated by 0.1, where every set shared `_sqlx_migrations`: in one
/// transaction, each of our rows there (version and checksum both ours) is recorded in the
/// owners' tables as applied (the objects exist) and deleted from `_sqlx_migrations`, which is
/// dropped when nothing else is left in it. Tables and rows are untouched. Afterwards an
/// application's `sqlx::migrate!` no longer trips over versions it does not know. A no-op on
/// databases without such rows.
pub async fn adopt_legacy(conn: &mut PgConnection) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(());
    }
    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT version, encode(checksum, 'hex'), success FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .context("reading _sqlx_migrations")?;
    let ours: Vec<_> = rows
        .iter()
        .filter_map(|(v, c, ok)| {
            LEGACY
                .iter()
                .find(|(lv, lc, _)| lv == v && lc == c)
                .map(|l| (l, *ok))
        })
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    if let Some(((v, ..), _)) = ours.iter().find(|(_, ok)| !ok) {
        anyhow::bail!(
            "_sqlx_migrations records our migration {v} as failed (a 0.1 migrate that broke off): fix the database by hand or recreate it"
        );
    }
    let mut tx = conn.begin().await?;
    for ((legacy, _, targets), _) in &ours {
        for (owner, version) in targets.iter() {
            ensure_table(owner, &mut tx).await?;
            let m = owner
                .migrator
                .iter()
                .find(|m| m.version == *version)
                .expect("LEGACY names only embedded migrations");
            sqlx::query(&format!(
                "INSERT INTO {} (version, description, success, checksum, execution_time)
                 VALUES ($1, $2, true, $3, 0) ON CONFLICT (version) DO NOTHING",
                owner.table
            ))
            .bind(m.version)
            .bind(m.description.as_ref())
            .bind(m.checksum.as_ref())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(legacy)
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            version = legacy,
            "moved 0.1's migration record out of _sqlx_migrations into the owners' tables"
        );
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut *tx)
        .await?;
    if left == 0 {
        tx.execute("DROP TABLE _sqlx_migrations").await?;
    }
    tx.commit().await.context("upgrading 0.1's migration history")?;
    Ok(())
}

/// The `migrate` command of each binary: apply `owner`'s set and say what happened.
pub async fn command(owner: &Owner, database_url: &str) -> anyhow::Result<()> {
    let applied = run(owner, database_url).await?;
    if applied.is_empty() {
        tracing::info!(
            owner = owner.name,
            total = owner.migrator.iter().count(),
            "schema up to date, nothing to apply"
        );
    } else {
        for m in owner.migrator.iter().filter(|m| applied.contains(&m.version)) {
            tracing::info!(owner = owner.name, version = m.version, description = %m.description, "applied migration");
        }
    }
    Ok(())
}
