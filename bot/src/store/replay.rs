//! Rebuilds a game from its first snapshot and its audited commands: the engine is pure and the
//! deck's seed is in the state, so the fold must land exactly on the stored state. Used to
//! investigate a game and, in the tests, to prove the audit trail is complete.

use std::collections::BTreeMap;

use thiserror::Error;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::game::{self, Actor, Command, Game, Refusal};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("game {0} has no snapshot")]
    NoSnapshot(Uuid),
    #[error("audited command {seq} is refused on replay: {refusal}")]
    Refused { seq: i32, refusal: Refusal },
    #[error("the audit trail has a gap: expected command {expected}, found {found}")]
    Gap { expected: i32, found: i32 },
    #[error("the replayed state differs from the snapshot at {seq}")]
    SnapshotDiffers { seq: i32 },
    #[error("the replayed state differs from the stored state (version {version})")]
    StateDiffers { version: i32 },
}

/// A successful replay: every snapshot and the stored state matched the fold.
#[derive(Debug)]
pub struct Replay {
    /// The seq of the snapshot the fold started from.
    pub from_seq: i32,
    /// Audited commands folded over it.
    pub commands: usize,
    /// Later snapshots the fold passed through and matched.
    pub snapshots_checked: usize,
    pub state: Game,
}

impl Store {
    pub async fn replay(&self, game_id: Uuid) -> Result<Replay, ReplayError> {
        let mut snapshots: BTreeMap<i32, Game> = BTreeMap::new();
        let rows: Vec<(i32, serde_json::Value)> =
            sqlx::query_as("SELECT seq, state FROM game_snapshots WHERE game_id = $1 ORDER BY seq")
                .bind(game_id)
                .fetch_all(self.pool())
                .await
                .map_err(StoreError::from)?;
        for (seq, state) in rows {
            snapshots.insert(seq, serde_json::from_value(state).map_err(StoreError::from)?);
        }
        let Some((from_seq, mut state)) = snapshots.pop_first() else {
            return Err(ReplayError::NoSnapshot(game_id));
        };
        let audit: Vec<(i32, serde_json::Value, serde_json::Value)> = sqlx::query_as(
            "SELECT seq, actor, command FROM game_audit WHERE game_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(game_id)
        .bind(from_seq)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::from)?;
        let mut snapshots_checked = 0;
        let mut expected = from_seq + 1;
        for (seq, actor, command) in &audit {
            let seq = *seq;
            if seq != expected {
                return Err(ReplayError::Gap { expected, found: seq });
            }
            let actor: Actor = serde_json::from_value(actor.clone()).map_err(StoreError::from)?;
            let command: Command = serde_json::from_value(command.clone()).map_err(StoreError::from)?;
            state = game::apply(Some(&state), &actor, command)
                .map_err(|refusal| ReplayError::Refused { seq, refusal })?
                .state;
            if let Some(snapshot) = snapshots.get(&seq) {
                if *snapshot != state {
                    return Err(ReplayError::SnapshotDiffers { seq });
                }
                snapshots_checked += 1;
            }
            expected += 1;
        }
        let (stored, version): (serde_json::Value, i32) =
            sqlx::query_as("SELECT state, version FROM games WHERE id = $1")
                .bind(game_id)
                .fetch_one(self.pool())
                .await
                .map_err(StoreError::from)?;
        let stored: Game = serde_json::from_value(stored).map_err(StoreError::from)?;
        if version != expected - 1 {
            return Err(ReplayError::Gap {
                expected: version,
                found: expected - 1,
            });
        }
        if stored != state {
            return Err(ReplayError::StateDiffers { version });
        }
        Ok(Replay {
            from_seq,
            commands: audit.len(),
            snapshots_checked,
            state,
        })
    }
}
