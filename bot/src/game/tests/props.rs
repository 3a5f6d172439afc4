//! Random command sequences from random actors, players and strangers alike, never break the
//! engine's invariants.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::game::rules::{MAX_ECONOMY, MAX_ORDERS, MAX_PLAYERS, MAX_ROUNDS, MAX_STABILITY, MIN_ECONOMY};

/// A command shape; targets and amounts are drawn wide so that many are invalid.
#[derive(Debug, Clone)]
enum Gen {
    Start,
    Join,
    Begin,
    Ready,
    Next,
    Give(u8, i64),
    Bid(i64, bool),
    Order(usize, Option<u8>),
    Clear,
    End,
    Votum,
    Vote(bool),
    VotumResult,
    /// The current phase's deadline.
    Deadline,
    Status,
    Info,
}

fn gen_cmd(with_end: bool) -> impl Strategy<Value = Gen> {
    prop_oneof![
        4 => Just(Gen::Start),
        20 => Just(Gen::Join),
        8 => Just(Gen::Begin),
        64 => Just(Gen::Ready),
        12 => Just(Gen::Next),
        20 => (0u8..=11, -10i64..160).prop_map(|(t, a)| Gen::Give(t, a)),
        16 => (-5i64..60, any::<bool>()).prop_map(|(a, c)| Gen::Bid(a, c)),
        32 => (0..OrderKind::ALL.len(), proptest::option::of(0u8..=11)).prop_map(|(k, t)| Gen::Order(k, t)),
        4 => Just(Gen::Clear),
        1 => Just(if with_end { Gen::End } else { Gen::Status }),
        8 => Just(Gen::Votum),
        12 => any::<bool>().prop_map(Gen::Vote),
        4 => Just(Gen::VotumResult),
        6 => Just(Gen::Deadline),
        4 => Just(Gen::Status),
        4 => Just(Gen::Info),
    ]
}

/// Targets as a chat would type them: @username, numeric id, country, garbage, nothing.
fn target(t: u8) -> String {
    match t {
        0 => String::new(),
        10 => "@nobody".into(),
        11 => "Sudmark".into(),
        t if t % 2 == 0 => format!("@{}", actor(t.into()).username.unwrap_or_default()),
        t => t.to_string(),
    }
}

fn to_cmd(game: &Game, g: Gen) -> Command {
    match g {
        Gen::Deadline => Command::Deadline {
            round: game.round,
            phase: game.phase,
        },
        Gen::Start => start_cmd(1, None),
        Gen::Join => Command::JoinGame,
        Gen::Begin => Command::BeginRound,
        Gen::Ready => Command::Ready,
        Gen::Next => Command::NextPhase,
        Gen::Give(t, amount) => Command::Give {
            to: target(t),
            amount,
        },
        Gen::Bid(amount, coins) => Command::Bid {
            amount,
            currency: if coins {
                Currency::Coins
            } else {
                Currency::Influence
            },
        },
        Gen::Order(k, t) => Command::SubmitOrder {
            kind: OrderKind::ALL[k],
            target: t.map(target),
        },
        Gen::Clear => Command::ClearOrders,
        Gen::End => Command::EndGame,
        Gen::Votum => Command::Votum,
        Gen::Vote(yes) => Command::VotumVote { yes },
        Gen::VotumResult => Command::VotumResult,
        Gen::Status => Command::Status,
        Gen::Info => Command::GameInfo,
    }
}

/// Mostly the first players (the chair among them), sometimes anyone up to 9 (never 9 players
/// fit, so someone is always a stranger).
fn steps(with_end: bool, max: usize) -> impl Strategy<Value = Vec<(PlayerId, Gen)>> {
    let who = prop_oneof![3 => 1i64..=3, 1 => 1i64..=9];
    proptest::collection::vec((who, gen_cmd(with_end)), 0..max)
}

fn phase_of(v: &serde_json::Value) -> Phase {
    serde_json::from_value(v.clone()).expect("phase.changed names phases")
}

/// Whether a money rule may fire for this command, given the phases it passed through.
fn money_rule_allowed(rule: MoneyRule, cmd: &Command, path: &[(Phase, Phase)]) -> bool {
    let entered = |p: Phase| path.iter().any(|t| t.1 == p);
    match rule {
        MoneyRule::StartingTreasury => matches!(cmd, Command::JoinGame | Command::StartGame { .. }),
        MoneyRule::Income | MoneyRule::StabilityBonus | MoneyRule::ChairSalary | MoneyRule::Upkeep => {
            entered(Phase::Income)
        }
        MoneyRule::Event => entered(Phase::Event),
        MoneyRule::ArenaBid | MoneyRule::ArenaPrize => {
            path.contains(&(Phase::WorldArena, Phase::Negotiations))
        }
        MoneyRule::Transfer => matches!(cmd, Command::Give { .. }),
        MoneyRule::OrderCost
        | MoneyRule::Stimulus
        | MoneyRule::TradePact
        | MoneyRule::Sanctions
        | MoneyRule::Espionage
        | MoneyRule::AntiMonopolyFine
        | MoneyRule::AntiMonopolyShare => entered(Phase::Resolve),
    }
}

fn rule_sum(out: &Outcome, rules: &[MoneyRule]) -> i64 {
    out.ledger
        .iter()
        .filter(|m| rules.contains(&m.rule))
        .map(|m| m.delta)
        .sum()
}

/// Every invariant of one accepted command.
fn check(
    old: Option<&Game>,
    id: PlayerId,
    cmd: &Command,
    out: &Outcome,
    keys: &mut HashSet<String>,
) -> Result<(), TestCaseError> {
    let new = &out.state;
    let player = old.is_some_and(|g| g.player(id).is_some());
    prop_assert!(
        player
            || matches!(
                cmd,
                Command::JoinGame | Command::StartGame { .. } | Command::Deadline { .. }
            )
            || cmd.is_read_only(),
        "a non-player's {:?} succeeded",
        cmd
    );
    if cmd.is_read_only() {
        prop_assert_eq!(Some(new), old);
        prop_assert!(out.events.is_empty() && out.ledger.is_empty());
        return Ok(());
    }
    prop_assert!(!out.events.is_empty(), "{:?} changed state silently", cmd);
    prop_assert_ne!(Some(new), old);

    // Events: well-formed, keys never repeat within the game.
    for e in &out.events {
        prop_assert_eq!(&e.aggregate_type, "game");
        prop_assert_eq!(&e.aggregate_id, &new.id.to_string());
        prop_assert!(e.idempotency_key.starts_with(&new.id.to_string()));
        prop_assert!(e.idempotency_key.ends_with(&e.event_type));
        prop_assert!(
            keys.insert(e.idempotency_key.clone()),
            "duplicate key {}",
            e.idempotency_key
        );
    }

    // Phases move only along the state machine (or to finished by /endgame).
    let path: Vec<(Phase, Phase)> = out
        .events
        .iter()
        .filter(|e| e.event_type == "phase.changed")
        .map(|e| (phase_of(&e.payload["from"]), phase_of(&e.payload["to"])))
        .collect();
    let mut at = old.map_or(Phase::Lobby, |g| g.phase);
    for &(from, to) in &path {
        prop_assert_eq!(from, at);
        prop_assert!(
            from.successors().contains(&to) || (to == Phase::Finished && *cmd == Command::EndGame),
            "illegal {} -> {}",
            from,
            to
        );
        at = to;
    }
    prop_assert_eq!(at, new.phase);
    prop_assert!(matches!(
        new.phase,
        Phase::Lobby | Phase::WorldArena | Phase::Negotiations | Phase::Orders | Phase::Finished
    ));

    // Rounds.
    let old_round = old.map_or(0, |g| g.round);
    prop_assert!(new.round >= old_round && new.round <= new.settings.rounds);
    prop_assert!(new.round <= old_round + 1 || (old_round == 0 && new.round == 1));
    if new.phase == Phase::Finished && *cmd != Command::EndGame {
        prop_assert_eq!(new.round, new.settings.rounds);
    }

    // Money changes only by documented rules, and the ledger accounts for every coin.
    for m in &out.ledger {
        prop_assert!(m.delta != 0);
        prop_assert!(
            money_rule_allowed(m.rule, cmd, &path),
            "{:?} after {:?}",
            m.rule,
            cmd
        );
    }
    for p in &new.players {
        let before = old.and_then(|g| g.player(p.id)).map_or(0, |q| q.coins);
        let moved: i64 = out
            .ledger
            .iter()
            .filter(|m| m.player == p.id)
            .map(|m| m.delta)
            .sum();
        prop_assert_eq!(p.coins, before + moved, "{}'s coins", p.name);
    }
    prop_assert_eq!(rule_sum(out, &[MoneyRule::Transfer]), 0);
    prop_assert_eq!(rule_sum(out, &[MoneyRule::Espionage]), 0);
    let fines = rule_sum(out, &[MoneyRule::AntiMonopolyFine, MoneyRule::AntiMonopolyShare]);
    prop_assert!(fines <= 0 && fines > -(new.players.len() as i64));

    // Figures stay in range.
    for p in &new.players {
        prop_assert!(p.coins >= 0 && p.influence >= 0);
        prop_assert!((0..=MAX_STABILITY).contains(&p.stability));
        prop_assert!((MIN_ECONOMY..=MAX_ECONOMY).contains(&p.economy));
        prop_assert!(new.orders_of(p.id).count() <= MAX_ORDERS);
        prop_assert!(!p.fallen || new.orders_of(p.id).count() == 0);
    }

    // Exactly one chair, who is a player; distinct players; phase-bound data only in its phase.
    prop_assert!(new.player(new.chair).is_some());
    let ids: HashSet<_> = new.players.iter().map(|p| p.id).collect();
    prop_assert_eq!(ids.len(), new.players.len());
    prop_assert!(new.players.len() <= MAX_PLAYERS);
    prop_assert!(new.phase == Phase::WorldArena || new.bids.is_empty());
    prop_assert!(new.phase == Phase::Orders || new.orders.is_empty());
    if new.phase == Phase::Finished {
        prop_assert!(out.events.iter().any(|e| e.event_type == "game.finished"));
        prop_assert_eq!(new.standings.len(), new.players.len());
        prop_assert!(new.votum.is_none());
        // Only a game played to its last round goes on the leaderboard.
        let fin = out
            .events
            .iter()
            .find(|e| e.event_type == "game.finished")
            .unwrap();
        let counted = fin.payload["standings"].as_array().map_or(0, Vec::len);
        prop_assert_eq!(new.is_rated(), counted > 0);
        prop_assert_eq!(new.is_rated(), !new.ended_early && new.round > 0);
        if *cmd == Command::EndGame {
            prop_assert!(!new.is_rated());
        }
    }
    Ok(())
}

/// The first snapshot, the accepted commands, the last state.
type Played = (Game, Vec<(PlayerId, Command)>, Game);

/// Plays `steps` against one game.
fn play(seed: u64, rounds: u32, steps: Vec<(PlayerId, Gen)>) -> Result<Played, TestCaseError> {
    let mut keys = HashSet::new();
    let start = start_cmd(seed, Some(rounds));
    let out = apply(None, &actor(1), start.clone()).expect("start");
    check(None, 1, &start, &out, &mut keys)?;
    let initial = out.state;
    let mut g = initial.clone();
    let mut accepted = Vec::new();
    for (id, shape) in steps {
        let cmd = to_cmd(&g, shape);
        let res = apply(Some(&g), &actor(id), cmd.clone());
        // Deterministic: a retried command gives the same outcome and the same keys.
        prop_assert_eq!(&res, &apply(Some(&g), &actor(id), cmd.clone()));
        if let Ok(out) = res {
            check(Some(&g), id, &cmd, &out, &mut keys)?;
            if !cmd.is_read_only() {
                accepted.push((id, cmd));
            }
            g = out.state;
        }
        if g.is_finished() {
            break;
        }
    }
    Ok((initial, accepted, g))
}

fn replay(from: Game, cmds: &[(PlayerId, Command)]) -> Game {
    cmds.iter().fold(from, |g, (id, cmd)| {
        apply(Some(&g), &actor(*id), cmd.clone())
            .expect("an audited command replays")
            .state
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_commands_keep_every_invariant_and_replay(
        seed in any::<u64>(),
        rounds in 1u32..=3,
        steps in steps(true, 400),
    ) {
        let (initial, accepted, last) = play(seed, rounds, steps)?;
        // Replay from the first snapshot, and from a JSON snapshot taken half-way.
        prop_assert_eq!(&replay(initial.clone(), &accepted), &last);
        let mid = accepted.len() / 2;
        let snapshot = serde_json::to_string(&replay(initial, &accepted[..mid])).unwrap();
        let restored: Game = serde_json::from_str(&snapshot).unwrap();
        prop_assert_eq!(&replay(restored, &accepted[mid..]), &last);
    }

    #[test]
    fn games_finish_after_the_configured_rounds(
        seed in any::<u64>(),
        rounds in 1u32..=MAX_ROUNDS,
        players in 2i64..=8,
        noise in steps(false, 40),
        every in 1usize..5,
    ) {
        let mut g = apply(None, &actor(1), start_cmd(seed, Some(rounds))).unwrap().state;
        for id in 2..=players {
            g = apply(Some(&g), &actor(id), Command::JoinGame).unwrap().state;
        }
        g = apply(Some(&g), &actor(1), Command::BeginRound).unwrap().state;
        let mut finished = 0;
        let mut forced = 0;
        let mut noise = noise.into_iter().cycle();
        for tick in 1.. {
            let (id, cmd) = if tick % every == 0 {
                forced += 1;
                (0, Command::Deadline { round: g.round, phase: g.phase })
            } else {
                match noise.next() {
                    Some((id, shape)) => (id, to_cmd(&g, shape)),
                    None => (0, Command::Deadline { round: g.round, phase: g.phase }),
                }
            };
            if let Ok(out) = apply(Some(&g), &actor(id), cmd) {
                finished += out.events.iter().filter(|e| e.event_type == "game.finished").count();
                g = out.state;
            }
            if g.is_finished() {
                break;
            }
            prop_assert!(forced <= 3 * rounds as usize + 1, "still in round {} phase {}", g.round, g.phase);
        }
        prop_assert_eq!(finished, 1);
        prop_assert_eq!(g.round, rounds);
        prop_assert!(!g.ended_early);
        prop_assert!(refused(&g, g.chair, Command::NextPhase) == Refusal::GameFinished);
    }
}
