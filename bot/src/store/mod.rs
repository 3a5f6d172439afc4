//! Persistence: every state-changing command is one PostgreSQL transaction that locks the game
//! row, applies the pure engine, and writes the new state, the players, an audit row, a snapshot
//! at phase changes and every domain event (through [`outbox::emit`]) before it commits. Nothing
//! is half-applied: a refusal or an error rolls everything back.
//!
//! The schema is `migrations/bot/20261126000200_game.sql` (`bot migrate`).

mod replay;

use std::time::Duration;

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};
use uuid::Uuid;

use crate::game::events::{GAME_CREATED, GAME_FINISHED, PHASE_CHANGED, ROUND_RESOLVED};
use crate::game::{self, Actor, Command, Game, Outcome, Refusal};

pub use replay::{Replay, ReplayError};

/// Errors callers branch on: a broken database is worth retrying later, a corrupt state is not.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored game state cannot be read: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoreError {
    /// Serialization failures and deadlocks roll the transaction back: running it again is safe.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

/// Where a command came from. A Telegram update id makes the command idempotent: a redelivered
/// update is recognised and changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// `telegram`, `console`, ... (recorded in the audit row).
    pub source: &'static str,
    pub update_id: Option<i64>,
}

/// What became of a command.
#[derive(Debug)]
pub enum Executed {
    /// Accepted (or read-only) and committed.
    Applied(Box<Applied>),
    /// Refused by the engine: nothing changed.
    Refused(Refusal),
    /// This update was handled before (Telegram redelivered it): nothing changed.
    Duplicate,
}

#[derive(Debug)]
pub struct Applied {
    pub game_id: Uuid,
    pub outcome: Outcome,
    /// The game's version after the command (the audit row's seq); unchanged for reads.
    pub seq: i32,
    /// Events whose idempotency key was already in the outbox. Keys are derived from the state,
    /// so this stays 0 unless a transition repeats (which the tests rule out).
    pub duplicate_events: usize,
}

/// One line of the cross-game leaderboard (the consumer's `leaderboard` view).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaderRow {
    pub rank: i64,
    pub player_id: String,
    pub name: String,
    pub games: i32,
    pub wins: i32,
}

const MAX_ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fails with a clear message when the game tables are missing (the migrations were not run).
    pub async fn check_schema(&self) -> anyhow::Result<()> {
        let ok: bool = sqlx::query_scalar(
            "SELECT to_regclass('games') IS NOT NULL AND to_regclass('outbox_events') IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        anyhow::ensure!(ok, "the game tables are missing: run `bot migrate` first");
        Ok(())
    }

    /// Runs one command against the chat's game, retrying transient failures. Read-only
    /// commands read without locking; the rest run in one transaction under the row lock.
    pub async fn execute(
        &self,
        chat_id: i64,
        actor: &Actor,
        cmd: &Command,
        origin: Origin,
    ) -> Result<Executed, StoreError> {
        let span = info_span!(
            "command",
            chat_id,
            game_id = tracing::field::Empty,
            actor = actor.id
        );
        async {
            if cmd.is_read_only() {
                return self.read(chat_id, actor, cmd).await;
            }
            let mut attempt = 1;
            loop {
                match self.execute_once(chat_id, actor, cmd, origin).await {
                    Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                        warn!(attempt, error = %e, "transient database error; retrying the command");
                        let jitter = rand::random_range(0..10u64);
                        tokio::time::sleep(Duration::from_millis(10 * (1 << attempt) + jitter)).await;
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn read(&self, chat_id: i64, actor: &Actor, cmd: &Command) -> Result<Executed, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let latest = latest(&mut conn, chat_id, false).await?;
        Ok(
            match game::apply(latest.as_ref().map(|l| &l.game), actor, cmd.clone()) {
                Err(refusal) => Executed::Refused(refusal),
                Ok(outcome) => {
                    let (game_id, seq) = latest.map_or((Uuid::nil(), 0), |l| (l.game.id, l.version));
                    Executed::Applied(Box::new(Applied {
                        game_id,
                        outcome,
                        seq,
                        duplicate_events: 0,
                    }))
                }
            },
        )
    }

    async fn execute_once(
        &self,
        chat_id: i64,
        actor: &Actor,
        cmd: &Command,
        origin: Origin,
    ) -> Result<Executed, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(update_id) = origin.update_id {
            // Claimed first: a concurrent redelivery waits here and then sees the conflict.
            let claimed = sqlx::query(
                "INSERT INTO processed_updates (update_id, chat_id, accepted) VALUES ($1, $2, false)
                 ON CONFLICT (update_id) DO NOTHING",
            )
            .bind(update_id)
            .bind(chat_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                tracing::info!(update_id, "update already processed; ignoring the redelivery");
                return Ok(Executed::Duplicate);
            }
        }
        let starting = matches!(cmd, Command::StartGame { .. });
        if starting {
            // No game row to lock yet: serialize the chat's /startgame commands instead.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('nemonopolia.chat:' || $1::text, 0))")
                .bind(chat_id)
                .execute(&mut *tx)
                .await?;
        }
        let latest = latest(&mut tx, chat_id, true).await?;
        if let Some(l) = &latest {
            tracing::Span::current().record("game_id", tracing::field::display(l.game.id));
        }
        let outcome = match game::apply(latest.as_ref().map(|l| &l.game), actor, cmd.clone()) {
            Ok(outcome) => outcome,
            Err(refusal) => {
                if let Some(update_id) = origin.update_id {
                    sqlx::query(
                        "UPDATE processed_updates SET game_id = $2, refusal = $3 WHERE update_id = $1",
                    )
                    .bind(update_id)
                    .bind(latest.as_ref().map(|l| l.game.id))
                    .bind(refusal.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                return Ok(Executed::Refused(refusal));
            }
        };
        let before = latest.as_ref().filter(|_| !starting).map(|l| &l.game);
        let seq = write_state(&mut tx, &outcome.state, before.is_none()).await?;
        let g = &outcome.state;
        tracing::Span::current().record("game_id", tracing::field::display(g.id));
        write_players(&mut tx, g).await?;
        write_audit(&mut tx, g, seq, actor, cmd, origin, before, &outcome).await?;
        if let Some(reason) = snapshot_reason(&outcome) {
            sqlx::query(
                "INSERT INTO game_snapshots (game_id, seq, round, phase, reason, state)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(g.id)
            .bind(seq)
            .bind(g.round as i32)
            .bind(g.phase.as_str())
            .bind(reason)
            .bind(serde_json::to_value(g)?)
            .execute(&mut *tx)
            .await?;
        }
        let mut duplicate_events = 0;
        for event in &outcome.events {
            if outbox::emit(&mut tx, event.as_new_event()).await?.is_none() {
                warn!(key = %event.idempotency_key, "event already in the outbox; not emitted twice");
                duplicate_events += 1;
            }
        }
        if let Some(update_id) = origin.update_id {
            sqlx::query("UPDATE processed_updates SET game_id = $2, accepted = true WHERE update_id = $1")
                .bind(update_id)
                .bind(g.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::debug!(seq, events = outcome.events.len(), phase = %g.phase, "command applied");
        Ok(Executed::Applied(Box::new(Applied {
            game_id: g.id,
            outcome,
            seq,
            duplicate_events,
        })))
    }

    /// Forgets updates handled longer ago than `age`. Telegram keeps an undelivered update for
    /// 24 hours, so older ones can never come back; and after a week without updates Telegram
    /// may restart update ids at a random value, which must not hit a remembered id.
    pub async fn forget_updates_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM processed_updates WHERE processed_at < now() - $1::interval")
            .bind(format!("{} seconds", age.as_secs()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The chat's latest game (the open one, or else the last finished one).
    pub async fn latest_game(&self, chat_id: i64) -> Result<Option<Game>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(latest(&mut conn, chat_id, false).await?.map(|l| l.game))
    }

    /// The top of the consumer's cross-game leaderboard.
    pub async fn leaderboard(&self, limit: i64) -> Result<Vec<LeaderRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT rank, player_id, name, games, wins FROM leaderboard LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

struct Latest {
    game: Game,
    version: i32,
}

async fn latest(conn: &mut PgConnection, chat_id: i64, lock: bool) -> Result<Option<Latest>, StoreError> {
    // The open game if there is one (at most one, by the partial unique index), else the newest.
    let sql = if lock {
        "SELECT state, version FROM games WHERE chat_id = $1
         ORDER BY phase <> 'finished' DESC, created_at DESC LIMIT 1 FOR UPDATE"
    } else {
        "SELECT state, version FROM games WHERE chat_id = $1
         ORDER BY phase <> 'finished' DESC, created_at DESC LIMIT 1"
    };
    let row: Option<(serde_json::Value, i32)> = sqlx::query_as(sql)
        .bind(chat_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|(state, version)| {
        Ok(Latest {
            game: serde_json::from_value(state)?,
            version,
        })
    })
    .transpose()
}

/// Inserts a new game or updates the locked one; returns the new version.
async fn write_state(conn: &mut PgConnection, g: &Game, new: bool) -> Result<i32, StoreError> {
    let state = serde_json::to_value(g)?;
    let finished = g.is_finished();
    let version = if new {
        sqlx::query_scalar(
            "INSERT INTO games (id, chat_id, phase, round, chair_id, seed, version, state, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, CASE WHEN $8 THEN now() END)
             RETURNING version",
        )
        .bind(g.id)
        .bind(g.chat_id)
        .bind(g.phase.as_str())
        .bind(g.round as i32)
        .bind(g.chair)
        // The u64 seed, bit for bit.
        .bind(g.seed as i64)
        .bind(state)
        .bind(finished)
        .fetch_one(&mut *conn)
        .await?
    } else {
        sqlx::query_scalar(
            "UPDATE games SET phase = $2, round = $3, chair_id = $4, state = $5, version = version + 1,
                    updated_at = now(), finished_at = CASE WHEN $6 THEN coalesce(finished_at, now()) END
             WHERE id = $1
             RETURNING version",
        )
        .bind(g.id)
        .bind(g.phase.as_str())
        .bind(g.round as i32)
        .bind(g.chair)
        .bind(state)
        .bind(finished)
        .fetch_one(&mut *conn)
        .await?
    };
    Ok(version)
}

/// Rewrites the players projection from the state, in one statement.
async fn write_players(conn: &mut PgConnection, g: &Game) -> Result<(), StoreError> {
    let ps = &g.players;
    sqlx::query(
        "INSERT INTO players (game_id, player_id, name, username, country, seat, coins, economy, stability,
                              influence, fallen, ready, is_chair)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[],
                                  $8::bigint[], $9::bigint[], $10::bigint[], $11::bool[], $12::bool[], $13::bool[])
         ON CONFLICT (game_id, player_id) DO UPDATE SET
             name = excluded.name, username = excluded.username, coins = excluded.coins,
             economy = excluded.economy, stability = excluded.stability, influence = excluded.influence,
             fallen = excluded.fallen, ready = excluded.ready, is_chair = excluded.is_chair, updated_at = now()",
    )
    .bind(g.id)
    .bind(ps.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.username.clone()).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.country.clone()).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.seat as i32).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.coins).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.economy).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.stability).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.influence).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.fallen).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.ready).collect::<Vec<_>>())
    .bind(ps.iter().map(|p| p.id == g.chair).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn write_audit(
    conn: &mut PgConnection,
    g: &Game,
    seq: i32,
    actor: &Actor,
    cmd: &Command,
    origin: Origin,
    before: Option<&Game>,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let summary = json!({
        "phase_before": before.map(|b| b.phase),
        "round_before": before.map(|b| b.round),
        "phase_after": g.phase,
        "round_after": g.round,
        "events": outcome.events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        "ledger": outcome.ledger,
    });
    sqlx::query(
        "INSERT INTO game_audit (game_id, seq, chat_id, actor_id, actor, command, source, update_id, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(g.id)
    .bind(seq)
    .bind(g.chat_id)
    .bind(actor.id)
    .bind(serde_json::to_value(actor)?)
    .bind(serde_json::to_value(cmd)?)
    .bind(origin.source)
    .bind(origin.update_id)
    .bind(summary)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Snapshots are taken when a game starts, changes phase, resolves a round or finishes.
fn snapshot_reason(outcome: &Outcome) -> Option<&'static str> {
    let has = |t: &str| outcome.events.iter().any(|e| e.event_type == t);
    [
        (GAME_CREATED, "created"),
        (GAME_FINISHED, "finished"),
        (ROUND_RESOLVED, "resolve"),
        (PHASE_CHANGED, "phase"),
    ]
    .into_iter()
    .find(|(t, _)| has(t))
    .map(|(_, reason)| reason)
}
