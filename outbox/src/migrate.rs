//! Embedded SQL migrations from `migrations/`, applied by sqlx's migrator. Re-running is a
//! no-op: sqlx records applied versions (and their checksums) in `_sqlx_migrations`.

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies every pending migration; returns the versions that were applied now.
pub async fn run(database_url: &str) -> anyhow::Result<Vec<i64>> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .context("connecting to DATABASE_URL to migrate")?;
    let before: Vec<i64> = applied(&pool).await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    let after = applied(&pool).await?;
    pool.close().await;
    Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
}

async fn applied(pool: &sqlx::PgPool) -> anyhow::Result<Vec<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

/// The `migrate` command of every binary: apply and say what happened.
pub async fn command(database_url: &str) -> anyhow::Result<()> {
    let applied = run(database_url).await?;
    if applied.is_empty() {
        tracing::info!(
            total = MIGRATOR.iter().count(),
            "schema up to date, nothing to apply"
        );
    } else {
        for m in MIGRATOR.iter().filter(|m| applied.contains(&m.version)) {
            tracing::info!(version = m.version, description = %m.description, "applied migration");
        }
    }
    Ok(())
}
