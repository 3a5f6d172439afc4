//! `apply`: one command against one state gives the next state, the chat replies and the domain
//! events, or a refusal that changes nothing. Pure: no clock, no RNG beyond the game's seed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::command::{Actor, Command};
use super::deck::{self, Effect};
use super::events::*;
use super::refusal::{Refusal, echo};
use super::rules::*;
use super::state::*;
use super::text;

/// A message for one player only (sent in a private chat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateReply {
    pub to: PlayerId,
    pub text: String,
}

/// The documented reasons coins may appear, disappear or move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoneyRule {
    StartingTreasury,
    Income,
    StabilityBonus,
    ChairSalary,
    Upkeep,
    Event,
    ArenaBid,
    ArenaPrize,
    Transfer,
    OrderCost,
    Stimulus,
    TradePact,
    Sanctions,
    Espionage,
    AntiMonopolyFine,
    AntiMonopolyShare,
}

/// One change of one treasury. The sum of a command's moves per player is exactly the change
/// of that player's coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyMove {
    pub player: PlayerId,
    pub delta: i64,
    pub rule: MoneyRule,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: Game,
    /// Messages for the game's chat, in order.
    pub public: Vec<String>,
    pub private: Vec<PrivateReply>,
    /// Empty exactly when the command changed nothing (read-only commands).
    pub events: Vec<DomainEvent>,
    pub ledger: Vec<MoneyMove>,
}

/// Applies `cmd` from `actor` to the chat's latest game (`None`: the chat never had one).
/// `StartGame` is accepted when there is no game or the latest one is finished.
pub fn apply(state: Option<&Game>, actor: &Actor, cmd: Command) -> Result<Outcome, Refusal> {
    match (state, cmd) {
        (
            None
            | Some(Game {
                phase: Phase::Finished,
                ..
            }),
            Command::StartGame {
                game_id,
                chat_id,
                seed,
                rounds,
            },
        ) => start(actor, game_id, chat_id, seed, rounds),
        (None, _) => Err(Refusal::NoGame),
        (Some(g), cmd) => Tx::new(g, actor).run(cmd),
    }
}

fn start(
    actor: &Actor,
    game_id: Uuid,
    chat_id: i64,
    seed: u64,
    rounds: Option<u32>,
) -> Result<Outcome, Refusal> {
    let rounds = rounds.unwrap_or(DEFAULT_ROUNDS);
    if !(1..=MAX_ROUNDS).contains(&rounds) {
        return Err(Refusal::InvalidRounds {
            got: rounds.to_string(),
            min: 1,
            max: MAX_ROUNDS,
        });
    }
    let (deck, prizes) = deck::shuffled(seed);
    let g = Game {
        id: game_id,
        chat_id,
        seed,
        settings: Settings { rounds },
        phase: Phase::Lobby,
        round: 0,
        chair: actor.id,
        players: Vec::new(),
        deck,
        prizes,
        bids: Vec::new(),
        bid_seq: 0,
        orders: Vec::new(),
        votum: None,
        votums_held: 0,
        standings: Vec::new(),
        ended_early: false,
        end_votes: Vec::new(),
    };
    let mut tx = Tx::new(&g, actor);
    tx.emit(
        GAME_CREATED,
        tx.key(""),
        json!({"game_id": game_id, "chat_id": chat_id, "chair": actor.id, "rounds": rounds, "seed": seed}),
    );
    tx.say(format!(
        "🌍 A new World Council is open! {} chairs it. Join with /joingame ({MIN_PLAYERS}–{MAX_PLAYERS} players); \
         the chair starts with /begin_round. Rounds: {rounds}. /rules explains the game.",
        actor.name
    ));
    tx.add_player();
    Ok(tx.finish())
}

/// One command in progress: a private copy of the state plus everything it produces. Dropping
/// it on a refusal discards every change.
pub(super) struct Tx<'a> {
    pub(super) g: Game,
    actor: &'a Actor,
    /// The actor's index in `g.players`, if a player.
    me: Option<usize>,
    // Key context, captured before the command changes anything.
    round0: u32,
    phase0: Phase,
    actions0: u32,
    /// Set by `/next_phase`, reported in `phase.changed`.
    forced_by: Option<PlayerId>,
    public: Vec<String>,
    private: Vec<PrivateReply>,
    events: Vec<DomainEvent>,
    ledger: Vec<MoneyMove>,
}

impl<'a> Tx<'a> {
    fn new(g: &Game, actor: &'a Actor) -> Self {
        let me = g.players.iter().position(|p| p.id == actor.id);
        Self {
            g: g.clone(),
            actor,
            me,
            round0: g.round,
            phase0: g.phase,
            actions0: me.map_or(0, |i| g.players[i].actions),
            forced_by: None,
            public: Vec::new(),
            private: Vec::new(),
            events: Vec::new(),
            ledger: Vec::new(),
        }
    }

    fn finish(self) -> Outcome {
        Outcome {
            state: self.g,
            public: self.public,
            private: self.private,
            events: self.events,
            ledger: self.ledger,
        }
    }

    fn run(mut self, cmd: Command) -> Result<Outcome, Refusal> {
        if cmd.is_read_only() {
            self.say(if cmd == Command::Status {
                text::status(&self.g)
            } else {
                text::info(&self.g)
            });
            if let Some(i) = self.me {
                let t = text::private_status(&self.g, &self.g.players[i]);
                self.tell(i, t);
            }
            return Ok(self.finish());
        }
        if self.g.is_finished() {
            return Err(Refusal::GameFinished);
        }
        if matches!(cmd, Command::StartGame { .. }) {
            return Err(Refusal::GameAlreadyOpen(self.g.phase));
        }
        // Sent by the bot's clock, not by a player.
        if let Command::Deadline { round, phase } = cmd {
            return self.deadline(round, phase).map(|()| self.finish());
        }
        let me = match (self.me, &cmd) {
            (Some(i), _) => i,
            (None, Command::JoinGame) => return self.join().map(|()| self.finish()),
            (None, _) => return Err(Refusal::NotAPlayer),
        };
        match cmd {
            Command::JoinGame => Err(Refusal::AlreadyJoined),
            Command::BeginRound => self.begin_round(),
            Command::NextPhase => self.next_phase(),
            Command::Deadline { .. } => Ok(()),
            Command::Ready => self.ready(me),
            Command::Give { to, amount } => self.give(me, &to, amount),
            Command::Bid { amount, currency } => self.bid(me, amount, currency),
            Command::SubmitOrder { kind, target } => self.submit_order(me, kind, target.as_deref()),
            Command::ClearOrders => self.clear_orders(me),
            Command::EndGame => self.end_game(me),
            Command::Votum => self.open_votum(me),
            Command::VotumVote { yes } => self.vote(me, yes),
            // Everyone voting closes the vote by itself, and so does the end of the phase: there
            // is nothing left for anyone to close early.
            Command::VotumResult => match &self.g.votum {
                Some(v) => Err(Refusal::VotumStillOpen {
                    voted: v.votes.len(),
                    players: self.g.players.len(),
                }),
                None => Err(Refusal::NoVotum),
            },
            // Answered before the player check above.
            Command::StartGame { .. } | Command::Status | Command::GameInfo => Ok(()),
        }?;
        self.g.players[me].actions += 1;
        Ok(self.finish())
    }

    // ---- replies, events, money ------------------------------------------------------------

    pub(super) fn say(&mut self, text: impl Into<String>) {
        self.public.push(text.into());
    }

    pub(super) fn tell(&mut self, i: usize, text: impl Into<String>) {
        self.private.push(PrivateReply {
            to: self.g.players[i].id,
            text: text.into(),
        });
    }

    /// `<game id>[:tail]`: the key prefix of events that happen once per game, round or vote.
    pub(super) fn key(&self, tail: &str) -> String {
        if tail.is_empty() {
            self.g.id.to_string()
        } else {
            format!("{}:{tail}", self.g.id)
        }
    }

    /// The key prefix of events of commands that may repeat: round, phase, actor, command and
    /// the actor's action count, all as they were before the command.
    fn actor_key(&self, command: &str) -> String {
        format!(
            "{}:r{}:{}:p{}:{command}:a{}",
            self.g.id,
            self.round0,
            self.phase0.as_str(),
            self.actor.id,
            self.actions0
        )
    }

    pub(super) fn emit(&mut self, event_type: &str, key: String, payload: Value) {
        self.events.push(DomainEvent {
            event_type: event_type.to_owned(),
            aggregate_type: AGGREGATE_TYPE.to_owned(),
            aggregate_id: self.g.id.to_string(),
            payload,
            idempotency_key: format!("{key}:{event_type}"),
        });
    }

    /// Changes a treasury, never below zero; returns the change actually made.
    pub(super) fn money(&mut self, i: usize, delta: i64, rule: MoneyRule) -> i64 {
        let p = &mut self.g.players[i];
        let applied = delta.max(-p.coins);
        p.coins += applied;
        if applied != 0 {
            self.ledger.push(MoneyMove {
                player: p.id,
                delta: applied,
                rule,
            });
        }
        applied
    }

    pub(super) fn add_stability(&mut self, i: usize, delta: i64) {
        let p = &mut self.g.players[i];
        p.stability = (p.stability + delta).clamp(0, MAX_STABILITY);
    }

    pub(super) fn add_economy(&mut self, i: usize, delta: i64) {
        let p = &mut self.g.players[i];
        p.economy = (p.economy + delta).clamp(MIN_ECONOMY, MAX_ECONOMY);
    }

    pub(super) fn add_influence(&mut self, i: usize, delta: i64) {
        let p = &mut self.g.players[i];
        p.influence = (p.influence + delta).max(0);
    }

    pub(super) fn apply_effect(&mut self, i: usize, e: Effect, rule: MoneyRule) {
        let coins = e.coins + self.g.players[i].coins * e.coins_percent / 100;
        self.money(i, coins, rule);
        self.add_economy(i, e.economy);
        self.add_stability(i, e.stability);
        self.add_influence(i, e.influence);
    }

    // ---- phases ----------------------------------------------------------------------------

    fn set_phase(&mut self, to: Phase) {
        let from = self.g.phase;
        self.g.phase = to;
        for p in &mut self.g.players {
            p.ready = false;
        }
        let round = self.g.round;
        self.emit(
            PHASE_CHANGED,
            self.key(&format!("r{round}:{}", to.as_str())),
            json!({"from": from, "to": to, "round": round, "forced_by": self.forced_by}),
        );
    }

    /// Leaves the current waiting phase (or the lobby) and runs the automatic phases behind it
    /// until the next phase that waits for players, or the end.
    fn advance(&mut self) {
        // A vote of no confidence lasts until the end of the phase it was called in.
        if let Some(v) = self.g.votum.take() {
            self.close_votum(v);
        }
        match self.g.phase {
            Phase::Lobby => self.start_round(1),
            Phase::WorldArena => {
                self.resolve_arena();
                self.set_phase(Phase::Negotiations);
                self.say(
                    "🤝 Negotiations: talk, promise, bargain. Send coins with /give @player N. /ready when done.",
                );
            }
            Phase::Negotiations => {
                self.set_phase(Phase::Orders);
                self.say(format!(
                    "📜 Orders: up to {MAX_ORDERS} secret decrees each with /orders (fallen governments sit out). \
                     They are revealed at resolve. /ready when done."
                ));
            }
            Phase::Orders => {
                self.set_phase(Phase::Resolve);
                self.resolve_round();
                if self.g.round >= self.g.settings.rounds {
                    self.finish_game(false);
                } else {
                    self.start_round(self.g.round + 1);
                }
            }
            // Never stored between commands, so nothing waits in them.
            Phase::Income | Phase::Event | Phase::Resolve | Phase::Finished => {}
        }
    }

    fn start_round(&mut self, round: u32) {
        self.g.round = round;
        self.set_phase(Phase::Income);
        let rounds = self.g.settings.rounds;
        self.emit(
            ROUND_STARTED,
            self.key(&format!("r{round}")),
            json!({"round": round, "rounds": rounds}),
        );
        self.say(format!("🔔 Round {round} of {rounds}."));
        self.g.end_votes.clear();
        let income = self.income();
        self.set_phase(Phase::Event);
        self.draw_card();
        // Private figures after the event card, so that they are the figures the player has now.
        for (i, lines) in income.into_iter().enumerate() {
            let figures = text::figures(&self.g.players[i]);
            self.tell(
                i,
                format!("💰 Round {round} income: {}.\n{figures}", lines.join(", ")),
            );
        }
        self.set_phase(Phase::WorldArena);
        if let Some(prize) = self.g.current_prize() {
            self.say(format!(
                "🏟 World Arena — {}: {}. One sealed bid each: /bid N coins or /bid N influence \
                 (1 influence = {INFLUENCE_BID_VALUE} coins). Highest bid wins, ties go to the more stable country. /ready when done.",
                prize.title(),
                prize.effect().describe()
            ));
        }
    }

    pub(super) fn finish_game(&mut self, ended_early: bool) {
        self.set_phase(Phase::Finished);
        self.g.votum = None;
        self.g.bids.clear();
        self.g.orders.clear();
        self.g.end_votes.clear();
        self.g.standings = self.g.ranking();
        self.g.ended_early = ended_early;
        // A game ended early or in the lobby is no result: the leaderboard counts players and
        // winners from `standings`, so it gets none (the final figures stay in the snapshot).
        let rated = self.g.is_rated();
        let winner = self.g.standings.first().filter(|_| rated).cloned();
        let standings = if rated {
            self.g.standings.clone()
        } else {
            Vec::new()
        };
        let payload = json!({
            "game_id": self.g.id,
            "chat_id": self.g.chat_id,
            "round": self.g.round,
            "rounds": self.g.settings.rounds,
            "ended_early": ended_early,
            "rated": rated,
            "standings": standings,
            // The consumer's leaderboard reads the flat id.
            "winner_id": winner.as_ref().map(|w| w.player_id),
            "winner": winner.as_ref().map(|w| json!({
                "player_id": w.player_id, "name": w.name, "country": w.country, "coins": w.coins,
            })),
        });
        self.emit(GAME_FINISHED, self.key(""), payload);
        self.say(text::final_standings(&self.g));
    }

    // ---- commands --------------------------------------------------------------------------

    fn require_chair(&self) -> Result<(), Refusal> {
        if self.actor.id == self.g.chair {
            Ok(())
        } else {
            Err(Refusal::NotChair)
        }
    }

    fn require_phase(&self, allowed: Phase, what: &'static str) -> Result<(), Refusal> {
        if self.g.phase == allowed {
            Ok(())
        } else {
            Err(Refusal::WrongPhase {
                what,
                allowed,
                now: self.g.phase,
            })
        }
    }

    fn require_players(&self, need: usize) -> Result<(), Refusal> {
        let have = self.g.players.len();
        if have >= need {
            Ok(())
        } else {
            Err(Refusal::NotEnoughPlayers { have, need })
        }
    }

    fn join(&mut self) -> Result<(), Refusal> {
        self.require_phase(Phase::Lobby, "Players can only join")?;
        if self.g.players.len() >= MAX_PLAYERS {
            return Err(Refusal::GameFull { max: MAX_PLAYERS });
        }
        let i = self.add_player();
        self.g.players[i].actions += 1;
        Ok(())
    }

    fn add_player(&mut self) -> usize {
        let seat = self.g.players.len() + 1;
        let name = match self.actor.name.trim() {
            "" => format!("Player {}", self.actor.id),
            n => n.to_owned(),
        };
        self.g.players.push(Player {
            id: self.actor.id,
            name,
            username: self
                .actor
                .username
                .as_ref()
                .map(|u| u.trim_start_matches('@').to_owned()),
            country: COUNTRIES[seat - 1].to_owned(),
            seat: seat as u32,
            coins: 0,
            economy: START_ECONOMY,
            stability: START_STABILITY,
            influence: START_INFLUENCE,
            fallen: false,
            ready: false,
            actions: 0,
            votum_round: None,
        });
        let i = seat - 1;
        self.me = Some(i);
        self.money(i, START_COINS, MoneyRule::StartingTreasury);
        let p = &self.g.players[i];
        let payload = json!({
            "player_id": p.id, "name": p.name, "username": p.username, "country": p.country, "seat": p.seat,
        });
        let text = format!(
            "👋 {} joins as the head of {} ({seat}/{MAX_PLAYERS}).",
            p.name, p.country
        );
        self.emit(PLAYER_JOINED, self.key(&format!("p{}", self.actor.id)), payload);
        self.say(text);
        i
    }

    fn begin_round(&mut self) -> Result<(), Refusal> {
        self.require_chair()?;
        self.require_phase(Phase::Lobby, "/begin_round works only")?;
        self.require_players(MIN_PLAYERS)?;
        self.advance();
        Ok(())
    }

    /// The chair may cut a phase short only when a majority (counting the chair) is ready, so
    /// a chair can no longer cut off the others' bids or decrees alone.
    fn next_phase(&mut self) -> Result<(), Refusal> {
        self.require_chair()?;
        if self.g.phase == Phase::Lobby {
            self.require_players(MIN_PLAYERS)?;
        } else {
            let chair = self.g.chair;
            let n = self.g.players.len();
            let ready = self.g.players.iter().filter(|p| p.ready || p.id == chair).count();
            let need = self.g.majority();
            if ready < need {
                return Err(Refusal::NextPhaseNeedsMajority {
                    ready,
                    players: n,
                    need,
                });
            }
            let passive = self.not_ready(Some(chair));
            let name = self.actor.name.clone();
            self.say(if passive.is_empty() {
                format!("⏭ {name} moves on.")
            } else {
                format!("⏭ {name} moves on ({ready} of {n} ready); passive: {passive}.")
            });
        }
        self.forced_by = Some(self.actor.id);
        self.advance();
        Ok(())
    }

    /// Who is not ready, by name ("Bob, Carol"), leaving out `but`.
    fn not_ready(&self, but: Option<PlayerId>) -> String {
        let names: Vec<&str> = self
            .g
            .players
            .iter()
            .filter(|p| !p.ready && Some(p.id) != but)
            .map(|p| p.name.as_str())
            .collect();
        names.join(", ")
    }

    /// The phase's deadline: it ends as if everyone were ready; the others stay passive.
    fn deadline(&mut self, round: u32, phase: Phase) -> Result<(), Refusal> {
        if self.g.round != round || self.g.phase != phase || !phase.waits_for_players() {
            return Err(Refusal::StaleDeadline);
        }
        let passive = self.not_ready(None);
        self.say(if passive.is_empty() {
            format!("⏰ Time is up for the {phase}.")
        } else {
            format!("⏰ Time is up for the {phase}; passive: {passive}.")
        });
        self.advance();
        Ok(())
    }

    /// In the lobby the chair closes the game at once. Once play has begun, ending it early is
    /// a vote: the chair proposes, and the game ends when a majority agreed; it counts for
    /// nobody on the leaderboard.
    fn end_game(&mut self, me: usize) -> Result<(), Refusal> {
        if self.g.phase == Phase::Lobby {
            self.require_chair()?;
            self.finish_game(true);
            return Ok(());
        }
        let id = self.actor.id;
        let need = self.g.majority();
        if self.g.end_votes.is_empty() && id != self.g.chair {
            return Err(Refusal::EndGameNotProposed);
        }
        if self.g.end_votes.contains(&id) {
            return Err(Refusal::AlreadyAgreedToEnd {
                votes: self.g.end_votes.len(),
                need,
            });
        }
        self.g.end_votes.push(id);
        let (round, votes) = (self.g.round, self.g.end_votes.len());
        self.emit(
            END_VOTED,
            self.key(&format!("r{round}:end:p{id}")),
            json!({"player_id": id, "round": round, "votes": votes, "need": need}),
        );
        let name = self.g.players[me].name.clone();
        if votes >= need {
            self.say(format!(
                "🏁 {votes} of {} agreed to end the game now.",
                self.g.players.len()
            ));
            self.finish_game(true);
        } else if votes == 1 {
            self.say(format!(
                "🏁 {name} proposes to end the game early ({votes} of {need} needed). \
                 Agree with /endgame; an early end counts for nobody on the leaderboard."
            ));
        } else {
            self.say(format!(
                "🏁 {name} agrees to end the game early ({votes} of {need} needed)."
            ));
        }
        Ok(())
    }

    fn ready(&mut self, me: usize) -> Result<(), Refusal> {
        if self.g.phase == Phase::Lobby {
            return Err(Refusal::NothingToBeReadyFor);
        }
        if self.g.players[me].ready {
            return Err(Refusal::AlreadyReady);
        }
        self.g.players[me].ready = true;
        let (round, phase, id) = (self.g.round, self.g.phase, self.actor.id);
        self.emit(
            PLAYER_READY,
            self.key(&format!("r{round}:{}:p{id}", phase.as_str())),
            json!({"player_id": id, "round": round, "phase": phase}),
        );
        let waiting: Vec<&str> = self
            .g
            .players
            .iter()
            .filter(|p| !p.ready)
            .map(|p| p.name.as_str())
            .collect();
        let n = self.g.players.len();
        let name = &self.g.players[me].name;
        if waiting.is_empty() {
            self.say(format!("✅ {name} is ready. Everyone is ready!"));
            self.advance();
        } else {
            let t = format!(
                "✅ {name} is ready ({}/{n}; waiting for {}).",
                n - waiting.len(),
                waiting.join(", ")
            );
            self.say(t);
        }
        Ok(())
    }

    /// Finds a player by @username, country, name or numeric id (as typed).
    fn target(&self, me: usize, typed: &str) -> Result<usize, Refusal> {
        let typed = typed.trim();
        let bare = typed.trim_start_matches('@').to_lowercase();
        let unknown = || Refusal::UnknownTarget(echo(typed));
        if bare.is_empty() {
            return Err(unknown());
        }
        let matching = |f: &dyn Fn(&Player) -> bool| -> Vec<usize> {
            let ps = &self.g.players;
            (0..ps.len()).filter(|&i| f(&ps[i])).collect()
        };
        let tries: [&dyn Fn(&Player) -> bool; 4] = [
            &|p| bare.parse() == Ok(p.id),
            &|p| p.username.as_ref().is_some_and(|u| u.to_lowercase() == bare),
            &|p| p.country.to_lowercase() == bare,
            &|p| p.name.to_lowercase() == bare,
        ];
        let found = tries
            .iter()
            .map(|f| matching(f))
            .find(|m| !m.is_empty())
            .ok_or_else(unknown)?;
        match found[..] {
            [i] if i == me => Err(Refusal::TargetIsSelf),
            [i] => Ok(i),
            _ => Err(Refusal::AmbiguousTarget(echo(typed))),
        }
    }

    fn give(&mut self, me: usize, to: &str, amount: i64) -> Result<(), Refusal> {
        self.require_phase(Phase::Negotiations, "Coins can only be given")?;
        if amount <= 0 {
            return Err(Refusal::NonPositiveAmount(amount));
        }
        let j = self.target(me, to)?;
        let have = self.g.players[me].coins;
        if have < amount {
            return Err(Refusal::InsufficientFunds {
                what: "coins",
                need: amount,
                have,
            });
        }
        self.money(me, -amount, MoneyRule::Transfer);
        self.money(j, amount, MoneyRule::Transfer);
        let (from, to) = (&self.g.players[me], &self.g.players[j]);
        let key = self.actor_key(&format!("give:{}:{amount}", to.id));
        let payload = json!({"from": from.id, "to": to.id, "amount": amount, "round": self.g.round});
        let sent = text::amount(amount, Currency::Coins);
        let public = format!("💸 {} sent {sent} to {}.", from.handle(), to.handle());
        let mine = format!(
            "You sent {sent}; you have {} left.",
            text::amount(from.coins, Currency::Coins)
        );
        let theirs = format!(
            "{} sent you {sent}; you now have {}.",
            from.handle(),
            text::amount(to.coins, Currency::Coins)
        );
        self.emit(COINS_TRANSFERRED, key, payload);
        self.say(public);
        self.tell(me, mine);
        self.tell(j, theirs);
        Ok(())
    }

    fn bid(&mut self, me: usize, amount: i64, currency: Currency) -> Result<(), Refusal> {
        self.require_phase(Phase::WorldArena, "Bids can only be placed")?;
        if amount <= 0 {
            return Err(Refusal::NonPositiveAmount(amount));
        }
        let p = &self.g.players[me];
        let have = match currency {
            Currency::Coins => p.coins,
            Currency::Influence => p.influence,
        };
        if have < amount {
            return Err(Refusal::InsufficientFunds {
                what: currency.as_str(),
                need: amount,
                have,
            });
        }
        let replaced = self.g.bids.iter().any(|b| b.player == p.id);
        self.g.bids.retain(|b| b.player != self.actor.id);
        self.g.bid_seq += 1;
        let bid = Bid {
            player: self.actor.id,
            amount,
            currency,
            seq: self.g.bid_seq,
        };
        self.g.bids.push(bid);
        self.emit(
            BID_PLACED,
            self.actor_key(&format!("bid:{}:{amount}", currency.as_str())),
            json!({"player_id": bid.player, "round": self.g.round, "amount": amount, "currency": currency}),
        );
        let name = &self.g.players[me].name;
        let verb = if replaced { "changed their" } else { "placed a" };
        self.say(format!("🤫 {name} {verb} sealed bid."));
        self.tell(
            me,
            format!(
                "Your bid: {} (worth {}).",
                text::amount(amount, currency),
                bid.value()
            ),
        );
        Ok(())
    }

    fn submit_order(&mut self, me: usize, kind: OrderKind, target: Option<&str>) -> Result<(), Refusal> {
        self.require_phase(Phase::Orders, "Orders can only be given")?;
        if self.g.players[me].fallen {
            return Err(Refusal::GovernmentFallen);
        }
        let id = self.actor.id;
        let given = self.g.orders_of(id).count();
        if given >= MAX_ORDERS {
            return Err(Refusal::TooManyOrders { max: MAX_ORDERS });
        }
        let target = match (kind.needs_target(), target) {
            (true, None) => return Err(Refusal::TargetRequired(kind)),
            (false, Some(_)) => return Err(Refusal::TargetNotAllowed(kind)),
            (true, Some(t)) => Some(self.target(me, t)?),
            (false, None) => None,
        };
        let target_id = target.map(|j| self.g.players[j].id);
        if self
            .g
            .orders_of(id)
            .any(|o| o.kind == kind && o.target == target_id)
        {
            return Err(Refusal::DuplicateOrder);
        }
        let need: i64 = self.g.orders_of(id).map(|o| o.kind.cost()).sum::<i64>() + kind.cost();
        let have = self.g.players[me].coins;
        if have < need {
            return Err(Refusal::InsufficientFunds {
                what: "coins",
                need,
                have,
            });
        }
        self.g.orders.push(Order {
            player: id,
            kind,
            target: target_id,
        });
        let slot = given + 1;
        let target_sig = target_id.map_or("-".to_owned(), |t| t.to_string());
        self.emit(
            ORDERS_SUBMITTED,
            self.actor_key(&format!("order:{}:{target_sig}", kind.as_str())),
            json!({"player_id": id, "round": self.g.round, "slot": slot, "kind": kind, "target": target_id}),
        );
        let aim = target.map_or(String::new(), |j| format!(" → {}", self.g.players[j].handle()));
        let name = self.g.players[me].name.clone();
        self.say(format!("📜 {name} issued a secret decree ({slot}/{MAX_ORDERS})."));
        self.tell(
            me,
            format!(
                "Decree {slot}: {}{aim}. Costs {}, paid at resolve. /orders clear withdraws your decrees.",
                kind.title(),
                text::amount(kind.cost(), Currency::Coins)
            ),
        );
        Ok(())
    }

    fn clear_orders(&mut self, me: usize) -> Result<(), Refusal> {
        self.require_phase(Phase::Orders, "Orders can only be withdrawn")?;
        let id = self.actor.id;
        let withdrawn = self.g.orders_of(id).count();
        if withdrawn == 0 {
            return Err(Refusal::NoOrders);
        }
        self.g.orders.retain(|o| o.player != id);
        self.emit(
            ORDERS_CLEARED,
            self.actor_key("clear_orders"),
            json!({"player_id": id, "round": self.g.round, "withdrawn": withdrawn}),
        );
        let name = self.g.players[me].name.clone();
        self.say(format!("📜 {name} withdrew their decrees."));
        Ok(())
    }

    fn open_votum(&mut self, me: usize) -> Result<(), Refusal> {
        if self.g.votum.is_some() {
            return Err(Refusal::VotumAlreadyOpen);
        }
        if self.actor.id == self.g.chair {
            return Err(Refusal::ChairCannotCallVotum);
        }
        self.require_players(MIN_PLAYERS)?;
        let round = self.g.round;
        if self.g.players[me].votum_round == Some(round) {
            return Err(Refusal::VotumLimit);
        }
        self.g.players[me].votum_round = Some(round);
        self.g.votums_held += 1;
        let number = self.g.votums_held;
        let id = self.actor.id;
        self.g.votum = Some(Votum {
            number,
            opened_by: id,
            votes: vec![Vote {
                player: id,
                yes: true,
            }],
        });
        self.emit(
            VOTUM_OPENED,
            self.key(&format!("votum{number}")),
            json!({"number": number, "opened_by": id, "chair": self.g.chair, "round": round}),
        );
        let chair = self.g.chair_player().map_or(String::new(), Player::handle);
        let need = self.g.players.len() / 2 + 1;
        let name = self.g.players[me].name.clone();
        self.say(format!(
            "🗳 {name} calls a vote of no confidence in the chair, {chair}! Vote yes or no; \
             {need} yes votes remove the chair. The vote closes when everyone has voted or this phase ends."
        ));
        self.close_votum_if_decided();
        Ok(())
    }

    fn vote(&mut self, me: usize, yes: bool) -> Result<(), Refusal> {
        let id = self.actor.id;
        let votum = self.g.votum.as_mut().ok_or(Refusal::NoVotum)?;
        if votum.votes.iter().any(|v| v.player == id) {
            return Err(Refusal::AlreadyVoted);
        }
        votum.votes.push(Vote { player: id, yes });
        let (number, tally_yes, tally_no) = (votum.number, votum.yes(), votum.no());
        self.emit(
            VOTUM_VOTED,
            self.key(&format!("votum{number}:p{id}")),
            json!({"number": number, "player_id": id, "yes": yes}),
        );
        let name = self.g.players[me].name.clone();
        let n = self.g.players.len();
        let word = if yes { "yes" } else { "no" };
        self.say(format!(
            "🗳 {name} votes {word} ({tally_yes} yes, {tally_no} no of {n})."
        ));
        self.close_votum_if_decided();
        Ok(())
    }

    /// Closes the vote as soon as the missing votes can no longer change its outcome.
    fn close_votum_if_decided(&mut self) {
        let n = self.g.players.len();
        let decided = |v: &Votum| {
            let missing = n - v.votes.len();
            v.yes() * 2 > n || (v.yes() + missing) * 2 <= n
        };
        if self.g.votum.as_ref().is_some_and(decided) {
            if let Some(v) = self.g.votum.take() {
                self.close_votum(v);
            }
        }
    }

    /// More than half of all players voting yes removes the chair; the chair passes to the next
    /// country in seat order (after the last seat, the first), so no figure of the game decides
    /// who rules next.
    fn close_votum(&mut self, v: Votum) {
        let n = self.g.players.len();
        let (yes, no) = (v.yes(), v.no());
        let old = self.g.chair;
        let old_seat = self.g.chair_player().map_or(0, |p| p.seat);
        let successor = self
            .g
            .players
            .iter()
            .filter(|p| p.id != old)
            .min_by_key(|p| (p.seat <= old_seat, p.seat))
            .map(|p| (p.id, p.handle()));
        let passed = yes * 2 > n && successor.is_some();
        let new_chair = if passed {
            successor.as_ref().map(|s| s.0)
        } else {
            None
        };
        self.emit(
            VOTUM_RESOLVED,
            self.key(&format!("votum{}", v.number)),
            json!({
                "number": v.number, "yes": yes, "no": no, "abstained": n - yes - no,
                "passed": passed, "old_chair": old, "new_chair": new_chair,
            }),
        );
        match (passed, successor) {
            (true, Some((id, handle))) => {
                self.g.chair = id;
                self.emit(
                    CHAIR_CHANGED,
                    self.key(&format!("votum{}", v.number)),
                    json!({"old_chair": old, "new_chair": id, "votum": v.number}),
                );
                self.say(format!(
                    "🗳 No confidence: {yes} yes, {no} no. The chair passes to {handle}."
                ));
            }
            _ => {
                let chair = self.g.chair_player().map_or(String::new(), Player::handle);
                self.say(format!(
                    "🗳 The vote fails: {yes} yes, {no} no of {n}. {chair} keeps the chair."
                ));
            }
        }
    }
}
