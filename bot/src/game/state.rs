//! The game state: plain serde data, stored as a JSONB snapshot and rebuilt by folding
//! [`apply`](super::apply) over the audited commands.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::deck::{EventCard, Prize};

/// A Telegram user id (console mode maps names to ids).
pub type PlayerId = i64;

/// The seed's state machine. Only lobby, world_arena, negotiations, orders and finished are ever
/// stored: income, event and resolve apply and pass within the command that enters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Lobby,
    Income,
    Event,
    WorldArena,
    Negotiations,
    Orders,
    Resolve,
    Finished,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lobby => "lobby",
            Phase::Income => "income",
            Phase::Event => "event",
            Phase::WorldArena => "world_arena",
            Phase::Negotiations => "negotiations",
            Phase::Orders => "orders",
            Phase::Resolve => "resolve",
            Phase::Finished => "finished",
        }
    }

    /// The phases this one may move to along the seed's state machine. `/endgame` may also
    /// finish a game from any phase; that abort is not an edge of the round cycle.
    pub fn successors(self) -> &'static [Phase] {
        match self {
            Phase::Lobby => &[Phase::Income],
            Phase::Income => &[Phase::Event],
            Phase::Event => &[Phase::WorldArena],
            Phase::WorldArena => &[Phase::Negotiations],
            Phase::Negotiations => &[Phase::Orders],
            Phase::Orders => &[Phase::Resolve],
            Phase::Resolve => &[Phase::Income, Phase::Finished],
            Phase::Finished => &[],
        }
    }

    /// Phases that wait for players (`/ready`, or the chair's `/next_phase`).
    pub fn waits_for_players(self) -> bool {
        matches!(self, Phase::WorldArena | Phase::Negotiations | Phase::Orders)
    }
}

/// As the chat reads it ("world arena"); keys and JSON use [`Phase::as_str`].
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().replace('_', " "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The last round; its resolve finishes the game.
    pub rounds: u32,
}

/// A player and the country they head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Player {
    pub id: PlayerId,
    pub name: String,
    pub username: Option<String>,
    pub country: String,
    /// 1-based join order; breaks every remaining tie.
    pub seat: u32,
    pub coins: i64,
    pub economy: i64,
    pub stability: i64,
    pub influence: i64,
    /// The government fell at the last resolve: no orders and no stability bonuses this round.
    pub fallen: bool,
    pub ready: bool,
    /// Accepted state-changing commands by this player; disambiguates idempotency keys of
    /// commands that may legitimately repeat (two equal `/give`s).
    pub actions: u32,
    /// The round in which this player last opened a vote of no confidence (one per round).
    pub votum_round: Option<u32>,
}

impl Player {
    /// "Alice (Nordavia)": how the chat names a player.
    pub fn handle(&self) -> String {
        format!("{} ({})", self.name, self.country)
    }

    /// Stability as bonuses and tie-breaks see it: a fallen government has none.
    pub fn effective_stability(&self) -> i64 {
        if self.fallen { 0 } else { self.stability }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Currency {
    Coins,
    Influence,
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Coins => "coins",
            Currency::Influence => "influence",
        }
    }
}

/// A sealed World Arena bid; a new bid by the same player replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub player: PlayerId,
    pub amount: i64,
    pub currency: Currency,
    /// Placement order: the earlier bid wins a tie that stability does not break.
    pub seq: u32,
}

/// The decrees of the orders phase, in the order the resolve applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    Security,
    Propaganda,
    Diplomacy,
    Invest,
    Stimulus,
    TradePact,
    Sanctions,
    Espionage,
}

impl OrderKind {
    pub const ALL: [OrderKind; 8] = [
        OrderKind::Security,
        OrderKind::Propaganda,
        OrderKind::Diplomacy,
        OrderKind::Invest,
        OrderKind::Stimulus,
        OrderKind::TradePact,
        OrderKind::Sanctions,
        OrderKind::Espionage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Security => "security",
            OrderKind::Propaganda => "propaganda",
            OrderKind::Diplomacy => "diplomacy",
            OrderKind::Invest => "invest",
            OrderKind::Stimulus => "stimulus",
            OrderKind::TradePact => "trade_pact",
            OrderKind::Sanctions => "sanctions",
            OrderKind::Espionage => "espionage",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            OrderKind::Security => "Security",
            OrderKind::Propaganda => "Propaganda",
            OrderKind::Diplomacy => "Diplomacy",
            OrderKind::Invest => "Invest",
            OrderKind::Stimulus => "Stimulus",
            OrderKind::TradePact => "Trade pact",
            OrderKind::Sanctions => "Sanctions",
            OrderKind::Espionage => "Espionage",
        }
    }

    pub fn needs_target(self) -> bool {
        matches!(
            self,
            OrderKind::TradePact | OrderKind::Sanctions | OrderKind::Espionage
        )
    }
}

/// A secret decree, revealed at resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub player: PlayerId,
    pub kind: OrderKind,
    pub target: Option<PlayerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub player: PlayerId,
    pub yes: bool,
}

/// An open vote of no confidence in the chair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Votum {
    /// 1-based count of votes held in this game; names the vote in idempotency keys.
    pub number: u32,
    pub opened_by: PlayerId,
    pub votes: Vec<Vote>,
}

impl Votum {
    pub fn yes(&self) -> usize {
        self.votes.iter().filter(|v| v.yes).count()
    }

    pub fn no(&self) -> usize {
        self.votes.len() - self.yes()
    }
}

/// One line of the final table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub rank: u32,
    pub player_id: PlayerId,
    pub name: String,
    pub country: String,
    pub coins: i64,
    pub economy: i64,
    pub stability: i64,
}

/// One game in one chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Game {
    pub id: Uuid,
    pub chat_id: i64,
    /// The only source of randomness: the deck and prize orders below were shuffled from it.
    pub seed: u64,
    pub settings: Settings,
    pub phase: Phase,
    /// 0 in the lobby, then 1..=settings.rounds.
    pub round: u32,
    pub chair: PlayerId,
    /// In join order.
    pub players: Vec<Player>,
    /// Round r draws `deck[r - 1]`.
    pub deck: Vec<EventCard>,
    /// Round r contests `prizes[(r - 1) % len]`.
    pub prizes: Vec<Prize>,
    pub bids: Vec<Bid>,
    pub bid_seq: u32,
    pub orders: Vec<Order>,
    pub votum: Option<Votum>,
    pub votums_held: u32,
    /// Filled when the game finishes.
    pub standings: Vec<Standing>,
    /// Finished by an agreed `/endgame` rather than by the last resolve.
    pub ended_early: bool,
    /// Players who agreed to end the game early (the chair proposes first); cleared each round.
    #[serde(default)]
    pub end_votes: Vec<PlayerId>,
}

impl Game {
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    pub fn player(&self, id: PlayerId) -> Option<&Player> {
        self.players.iter().find(|p| p.id == id)
    }

    pub fn chair_player(&self) -> Option<&Player> {
        self.player(self.chair)
    }

    pub fn total_coins(&self) -> i64 {
        self.players.iter().map(|p| p.coins).sum()
    }

    /// The world event of the current round, once drawn.
    pub fn current_event(&self) -> Option<EventCard> {
        let drawn = self.round > 0 && !matches!(self.phase, Phase::Lobby | Phase::Income);
        drawn.then(|| self.deck[(self.round - 1) as usize % self.deck.len()])
    }

    /// The World Arena prize of the current round.
    pub fn current_prize(&self) -> Option<Prize> {
        (self.round > 0).then(|| self.prizes[(self.round - 1) as usize % self.prizes.len()])
    }

    pub fn orders_of(&self, id: PlayerId) -> impl Iterator<Item = &Order> {
        self.orders.iter().filter(move |o| o.player == id)
    }

    pub fn bid_of(&self, id: PlayerId) -> Option<&Bid> {
        self.bids.iter().find(|b| b.player == id)
    }

    /// Whether the result counts on the leaderboard: only a game played to its last round.
    pub fn is_rated(&self) -> bool {
        self.is_finished() && !self.ended_early && self.round > 0
    }

    /// More than half of all players.
    pub fn majority(&self) -> usize {
        self.players.len() / 2 + 1
    }

    /// Ranking: coins, then stability, then join order.
    pub fn ranking(&self) -> Vec<Standing> {
        let mut ps: Vec<&Player> = self.players.iter().collect();
        ps.sort_by_key(|p| (-p.coins, -p.stability, p.seat));
        ps.iter()
            .zip(1..)
            .map(|(p, rank)| Standing {
                rank,
                player_id: p.id,
                name: p.name.clone(),
                country: p.country.clone(),
                coins: p.coins,
                economy: p.economy,
                stability: p.stability,
            })
            .collect()
    }
}
