//! One relay leads per slot; the others wait. Leadership is a session-level advisory lock held
//! on a dedicated connection: when the leader dies, PostgreSQL drops its session and the lock,
//! and the next waiting relay takes it within one poll interval.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

pub struct Leadership {
    conn: PgConnection,
}

/// The lock key for a slot; the same on every instance.
fn key(slot: &str) -> String {
    format!("outbox-cdc relay {slot}")
}

/// Waits until this instance holds the lock for `slot`.
pub async fn acquire(database_url: &str, slot: &str, poll: Duration) -> anyhow::Result<Leadership> {
    let mut logged = false;
    loop {
        let mut conn = PgConnection::connect(database_url).await?;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(key(slot))
                .fetch_one(&mut conn)
                .await?;
            if got {
                tracing::info!(slot, "leading: holding the relay lock");
                return Ok(Leadership { conn });
            }
            if !logged {
                tracing::info!(slot, "another relay leads this slot; standing by");
                logged = true;
            }
            tokio::time::sleep(poll).await;
            if conn.ping().await.is_err() {
                break;
            }
        }
    }
}

impl Leadership {
    /// Returns when the lock's session is gone (the lock with it): the relay must stop leading.
    pub async fn lost(&mut self) {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if self.conn.ping().await.is_err() {
                tracing::error!("lost the connection that holds the relay lock");
                return;
            }
        }
    }
}
