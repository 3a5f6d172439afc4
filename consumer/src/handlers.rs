//! What each event type does to the projections.
//!
//! [`prepare`] turns an envelope into an [`Effect`] without touching the database, so a payload
//! the handler cannot use is known before the transaction. [`apply_games`] writes the effects
//! of many events with two statements.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sqlx::PgConnection;
use uuid::Uuid;

pub const GAME_FINISHED: &str = "game.finished";

/// The effect of one event on the projections.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    GameFinished(GameFinished),
    /// An event type without a handler: recorded as `skipped`, not failed.
    Skip,
}

/// A `game.finished` payload, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct GameFinished {
    pub game_id: String,
    pub chat_id: i64,
    pub winner_id: Option<String>,
    pub standings: Vec<Standing>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub player_id: String,
    pub name: String,
}

/// The payload does not fit its event type's contract; retrying cannot change that.
#[derive(Debug, thiserror::Error)]
#[error("invalid {event_type} payload: {reason}")]
pub struct PayloadError {
    pub event_type: String,
    pub reason: String,
}

/// Player ids are Telegram user ids (numbers) or strings; both are stored as text. A visitor
/// rather than an untagged enum: that one buffers the value and builds an error per number.
struct PlayerId(String);

impl<'de> Deserialize<'de> for PlayerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Id;
        impl Visitor<'_> for Id {
            type Value = PlayerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a player id (string or integer)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PlayerId, E> {
                Ok(PlayerId(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<PlayerId, E> {
                Ok(PlayerId(s))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PlayerId, E> {
                Ok(PlayerId(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PlayerId, E> {
                Ok(PlayerId(n.to_string()))
            }
        }
        d.deserialize_any(Id)
    }
}

#[derive(Deserialize)]
struct GameFinishedPayload {
    game_id: String,
    chat_id: i64,
    #[serde(default)]
    standings: Option<Vec<StandingPayload>>,
    #[serde(default)]
    winner_id: Option<PlayerId>,
}

#[derive(Deserialize)]
struct StandingPayload {
    player_id: PlayerId,
    name: String,
}

/// The effect of an event of `event_type`. Takes the payload by value: deserializing moves its
/// strings instead of copying them.
pub fn prepare(event_type: &str, payload: serde_json::Value) -> Result<Effect, PayloadError> {
    match event_type {
        GAME_FINISHED => game_finished(payload)
            .map(Effect::GameFinished)
            .map_err(|reason| PayloadError {
                event_type: event_type.to_string(),
                reason,
            }),
        _ => Ok(Effect::Skip),
    }
}

fn game_finished(payload: serde_json::Value) -> Result<GameFinished, String> {
    let p = GameFinishedPayload::deserialize(payload).map_err(|e| e.to_string())?;
    if p.game_id.is_empty() {
        return Err("game_id is empty".into());
    }
    storable("game_id", &p.game_id)?;
    let mut seen = HashSet::new();
    let mut standings = Vec::new();
    for s in p.standings.unwrap_or_default() {
        let PlayerId(player_id) = s.player_id;
        if player_id.is_empty() {
            return Err("a standing has an empty player_id".into());
        }
        storable("player_id", &player_id)?;
        storable("name", &s.name)?;
        if !seen.insert(player_id.clone()) {
            return Err(format!("player {player_id} appears twice in standings"));
        }
        standings.push(Standing {
            player_id,
            name: s.name,
        });
    }
    let winner_id = p.winner_id.map(|PlayerId(w)| w);
    if let Some(w) = winner_id
        .as_ref()
        .filter(|w| !standings.is_empty() && !seen.contains(*w))
    {
        return Err(format!("winner {w} is not in standings"));
    }
    Ok(GameFinished {
        game_id: p.game_id,
        chat_id: p.chat_id,
        winner_id,
        standings,
    })
}

/// PostgreSQL text cannot hold NUL. Checked here rather than left to the database, because
/// per-player totals are merged before they are written: a later event's name would hide it.
fn storable(field: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{field} contains a NUL character"));
    }
    Ok(())
}

/// A finished game to count, with the event that reported it.
pub struct FinishedGame<'a> {
    pub event_id: Uuid,
    pub finished_at: DateTime<Utc>,
    pub game: &'a GameFinished,
}

/// Counts the games: a game already in leaderboard_games (or twice in `games`) is not counted
/// again, and players are updated only for the games inserted now. `games` must be in delivery
/// order, since later events win a player's name.
pub async fn apply_games(conn: &mut PgConnection, games: &[FinishedGame<'_>]) -> Result<(), sqlx::Error> {
    if games.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(games.len());
    let mut chats = Vec::with_capacity(games.len());
    let mut winners = Vec::with_capacity(games.len());
    let mut players = Vec::with_capacity(games.len());
    let mut finished = Vec::with_capacity(games.len());
    let mut events = Vec::with_capacity(games.len());
    for g in games {
        ids.push(g.game.game_id.as_str());
        chats.push(g.game.chat_id);
        winners.push(g.game.winner_id.as_deref());
        players.push(g.game.standings.len() as i32);
        finished.push(g.finished_at);
        events.push(g.event_id);
    }
    let mut new: HashSet<String> = sqlx::query_scalar(
        "INSERT INTO leaderboard_games (game_id, chat_id, winner_id, players, finished_at, event_id)
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int4[], $5::timestamptz[], $6::uuid[])
         ON CONFLICT (game_id) DO NOTHING
         RETURNING game_id",
    )
    .bind(&ids)
    .bind(&chats)
    .bind(&winners)
    .bind(&players)
    .bind(&finished)
    .bind(&events)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();

    // Per player totals of the new games. Sorted by player id, so that concurrent consumers
    // (during a rebalance) lock player rows in the same order and cannot deadlock.
    let mut totals: BTreeMap<&str, (&str, i32, i32)> = BTreeMap::new();
    for g in games {
        // `remove`: only the first report of a game in the batch counts.
        if !new.remove(&g.game.game_id) {
            continue;
        }
        for s in &g.game.standings {
            let t = totals.entry(&s.player_id).or_insert((&s.name, 0, 0));
            t.0 = &s.name;
            t.1 += 1;
            t.2 += i32::from(g.game.winner_id.as_ref() == Some(&s.player_id));
        }
    }
    if totals.is_empty() {
        return Ok(());
    }
    let (mut ids, mut names, mut played, mut wins) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, (name, g, w)) in totals {
        ids.push(id);
        names.push(name);
        played.push(g);
        wins.push(w);
    }
    sqlx::query(
        "INSERT INTO leaderboard_players AS p (player_id, name, games_played, wins)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int4[])
         ON CONFLICT (player_id) DO UPDATE SET
             name = EXCLUDED.name,
             games_played = p.games_played + EXCLUDED.games_played,
             wins = p.wins + EXCLUDED.wins,
             updated_at = now()",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&played)
    .bind(&wins)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn game(payload: serde_json::Value) -> GameFinished {
        match prepare(GAME_FINISHED, payload).unwrap() {
            Effect::GameFinished(g) => g,
            Effect::Skip => panic!("expected a game"),
        }
    }

    fn reason(payload: serde_json::Value) -> String {
        prepare(GAME_FINISHED, payload).unwrap_err().to_string()
    }

    #[test]
    fn the_seed_event_is_a_game_without_players() {
        let g = game(json!({"game_id": "11111111-1111-1111-1111-111111111111", "chat_id": -5056821738i64}));
        assert_eq!(g.chat_id, -5056821738);
        assert!(g.standings.is_empty());
        assert_eq!(g.winner_id, None);
    }

    #[test]
    fn standings_accept_numeric_and_string_player_ids() {
        let g = game(json!({"game_id": "g1", "chat_id": 1, "winner_id": 42,
                   "standings": [{"player_id": 42, "name": "Ann", "coins": 10, "rank": 1},
                                 {"player_id": "p7", "name": "Bob", "coins": 3, "rank": 2}]}));
        assert_eq!(g.winner_id.as_deref(), Some("42"));
        let ids: Vec<_> = g.standings.iter().map(|s| s.player_id.as_str()).collect();
        assert_eq!(ids, ["42", "p7"]);
    }

    #[test]
    fn invalid_payloads_say_why() {
        assert!(reason(json!({"chat_id": 1})).contains("missing field `game_id`"));
        assert!(reason(json!({"game_id": "g", "chat_id": "x"})).contains("invalid type"));
        assert!(reason(json!({"game_id": "g", "chat_id": 1, "standings": "x"})).contains("invalid type"));
        let float_id = json!({"game_id": "g", "chat_id": 1, "standings": [{"player_id": 1.5, "name": "a"}]});
        assert!(reason(float_id).contains("expected a player id (string or integer)"));
        assert!(reason(json!({"game_id": "", "chat_id": 1})).contains("game_id is empty"));
        let twice = json!({"game_id": "g", "chat_id": 1, "standings": [
            {"player_id": 1, "name": "a"}, {"player_id": "1", "name": "b"}]});
        assert!(reason(twice).contains("appears twice"));
        let stranger = json!({"game_id": "g", "chat_id": 1, "winner_id": "9",
            "standings": [{"player_id": 1, "name": "a"}]});
        assert!(reason(stranger).contains("winner 9 is not in standings"));
        let nul = json!({"game_id": "g", "chat_id": 1, "standings": [{"player_id": 1, "name": "a\u{0}"}]});
        assert!(reason(nul).contains("name contains a NUL character"));
    }

    #[test]
    fn other_event_types_are_skipped() {
        assert_eq!(prepare("player.joined", json!("anything")).unwrap(), Effect::Skip);
    }
}
