//! What a player can ask of the engine. Commands are serde data so the persistence layer can
//! audit them and replay a game by folding them over its first snapshot.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::refusal::{Refusal, echo};
use super::state::{Currency, OrderKind, Phase, PlayerId};

/// Who sends a command. The name and username are taken at join time and used to find
/// `@targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: PlayerId,
    pub name: String,
    pub username: Option<String>,
}

impl Actor {
    pub fn new(id: PlayerId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            username: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Opens a game; the ids and the seed come from the adapter so replay needs no clock or RNG.
    StartGame {
        game_id: Uuid,
        chat_id: i64,
        seed: u64,
        /// `None`: the default number of rounds.
        rounds: Option<u32>,
    },
    JoinGame,
    /// The chair starts round 1.
    BeginRound,
    Ready,
    /// The chair ends the current phase without waiting for everyone: accepted once a majority
    /// is ready.
    NextPhase,
    /// The current phase's deadline passed (sent by the bot, not typed): the phase ends, whoever
    /// is not ready stays passive. Names the phase it ends, so a late or repeated deadline of a
    /// phase that already ended changes nothing.
    Deadline {
        round: u32,
        phase: Phase,
    },
    /// `to` as typed: @username, name, country or numeric id.
    Give {
        to: String,
        amount: i64,
    },
    Bid {
        amount: i64,
        currency: Currency,
    },
    SubmitOrder {
        kind: OrderKind,
        target: Option<String>,
    },
    /// Withdraws this round's orders (a misclick in the `/orders` menu is easy).
    ClearOrders,
    /// In the lobby the chair closes the game; later it is a vote to end the game early, which
    /// the chair proposes and a majority of players must agree to.
    EndGame,
    Votum,
    VotumVote {
        yes: bool,
    },
    VotumResult,
    /// Read-only: phase, round, readiness, and the actor's private figures.
    Status,
    /// Read-only: the full public table.
    GameInfo,
}

impl Command {
    /// Read-only commands change nothing and emit no events.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Command::Status | Command::GameInfo)
    }
}

/// A typed whole number: `Ok(None)` when it is not one, `Err` when it is one too large for i64
/// (a run of digits is a number, however long: "99999999999999999999" is too large, not malformed).
pub fn parse_whole(s: &str) -> Result<Option<i64>, Refusal> {
    let t = s.trim();
    if let Ok(n) = t.parse() {
        return Ok(Some(n));
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::AmountTooLarge(echo(t)));
    }
    Ok(None)
}

/// Parses a typed amount; the refusal is the chat reply.
pub fn parse_amount(s: &str) -> Result<i64, Refusal> {
    let n = parse_whole(s)?.ok_or_else(|| Refusal::MalformedAmount(echo(s)))?;
    if n <= 0 {
        return Err(Refusal::NonPositiveAmount(n));
    }
    Ok(n)
}

impl FromStr for OrderKind {
    type Err = Refusal;

    /// Accepts the snake_case name, the title ("trade pact"), or a unique prefix ("spy" and
    /// "pact" too); a prefix of several names is ambiguous, not unknown.
    fn from_str(s: &str) -> Result<Self, Refusal> {
        let k = s.trim().to_lowercase().replace([' ', '-'], "_");
        let alias = match k.as_str() {
            "spy" => Some(OrderKind::Espionage),
            "pact" | "trade" => Some(OrderKind::TradePact),
            _ => None,
        };
        let hits: Vec<OrderKind> = OrderKind::ALL
            .into_iter()
            .filter(|o| !k.is_empty() && o.as_str().starts_with(&k))
            .collect();
        match (alias, &hits[..]) {
            (Some(o), _) => Ok(o),
            (None, [o]) => Ok(*o),
            (None, []) => Err(Refusal::UnknownOrderKind(echo(s))),
            (None, _) => Err(Refusal::AmbiguousOrderKind {
                typed: echo(s),
                matches: hits,
            }),
        }
    }
}

impl FromStr for Currency {
    type Err = Refusal;

    fn from_str(s: &str) -> Result<Self, Refusal> {
        match s.trim().to_lowercase().as_str() {
            "" | "c" | "coin" | "coins" => Ok(Currency::Coins),
            "i" | "inf" | "influence" => Ok(Currency::Influence),
            _ => Err(Refusal::UnknownCurrency(echo(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_or_refuse_clearly() {
        assert_eq!(parse_amount(" 20 "), Ok(20));
        assert_eq!(parse_amount("-5"), Err(Refusal::NonPositiveAmount(-5)));
        assert_eq!(parse_amount("0"), Err(Refusal::NonPositiveAmount(0)));
        assert_eq!(
            parse_amount("lots").unwrap_err().to_string(),
            "“lots” is not an amount: use a whole number, like 20."
        );
        assert_eq!(
            parse_amount("99999999999999999999").unwrap_err().to_string(),
            "99999999999999999999 is far more than anyone has: use a smaller amount."
        );
        let long = "x".repeat(4000);
        let reply = parse_amount(&long).unwrap_err().to_string();
        assert!(reply.chars().count() < 120, "{reply}");
        assert!(reply.contains(&format!("{}…", "x".repeat(64))), "{reply}");
    }

    #[test]
    fn order_kinds_parse_by_name_prefix_and_alias() {
        assert_eq!("invest".parse(), Ok(OrderKind::Invest));
        assert_eq!("Trade pact".parse(), Ok(OrderKind::TradePact));
        assert_eq!("spy".parse(), Ok(OrderKind::Espionage));
        assert_eq!("san".parse(), Ok(OrderKind::Sanctions));
        for kind in OrderKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        let err = "s".parse::<OrderKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "“s” could be security, stimulus, sanctions: type more of the name."
        );
        assert!(matches!(
            "dance".parse::<OrderKind>(),
            Err(Refusal::UnknownOrderKind(_))
        ));
        assert!("".parse::<OrderKind>().is_err());
    }

    #[test]
    fn currencies_parse() {
        assert_eq!("".parse(), Ok(Currency::Coins));
        assert_eq!("Influence".parse(), Ok(Currency::Influence));
        assert!("gold".parse::<Currency>().is_err());
    }

    #[test]
    fn commands_are_tagged_json_for_the_audit() {
        let c = Command::Give {
            to: "@bob".into(),
            amount: 5,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v, serde_json::json!({"type": "give", "to": "@bob", "amount": 5}));
        assert_eq!(serde_json::from_value::<Command>(v).unwrap(), c);
    }
}
