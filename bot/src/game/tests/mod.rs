//! Engine tests: unit tests per phase, rule and refusal; property tests over random command
//! sequences; a balance simulation.

mod balance;
mod props;
mod unit;

use uuid::Uuid;

use super::*;

pub const GAME_ID: Uuid = Uuid::from_u128(0x1111_1111_1111_1111_1111_1111_1111_1111);
pub const CHAT_ID: i64 = -5_056_821_738;
const NAMES: [&str; 10] = [
    "Nobody", "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan",
];

/// Players 1..=9 are Alice..Ivan with usernames alice..ivan.
pub fn actor(id: PlayerId) -> Actor {
    let name = NAMES[id as usize % NAMES.len()];
    Actor {
        id,
        name: name.to_owned(),
        username: Some(name.to_lowercase()),
    }
}

pub fn start_cmd(seed: u64, rounds: Option<u32>) -> Command {
    Command::StartGame {
        game_id: GAME_ID,
        chat_id: CHAT_ID,
        seed,
        rounds,
    }
}

/// A lobby opened by Alice (1) with players 1..=n.
pub fn lobby(n: i64) -> Game {
    let mut g = apply(None, &actor(1), start_cmd(7, None)).unwrap().state;
    for id in 2..=n {
        g = apply(Some(&g), &actor(id), Command::JoinGame).unwrap().state;
    }
    g
}

/// Applies a command that must succeed and moves `g` forward.
pub fn ok(g: &mut Game, id: PlayerId, cmd: Command) -> Outcome {
    let out =
        apply(Some(g), &actor(id), cmd.clone()).unwrap_or_else(|r| panic!("{cmd:?} by {id} refused: {r}"));
    *g = out.state.clone();
    out
}

/// Applies a command that must be refused and checks it changed nothing.
pub fn refused(g: &Game, id: PlayerId, cmd: Command) -> Refusal {
    let before = g.clone();
    let r = apply(Some(g), &actor(id), cmd.clone())
        .err()
        .unwrap_or_else(|| panic!("{cmd:?} by {id} was accepted"));
    assert_eq!(*g, before);
    r
}

/// The bot's clock ends the current phase (its deadline passed).
pub fn deadline(g: &mut Game) -> Outcome {
    let cmd = Command::Deadline {
        round: g.round,
        phase: g.phase,
    };
    let out = apply(Some(g), &actor(0), cmd).unwrap_or_else(|r| panic!("deadline refused: {r}"));
    *g = out.state.clone();
    out
}

/// Deadlines (the lobby: the chair's /begin_round) until `phase` (of any round) is reached.
pub fn force_to(g: &mut Game, phase: Phase) {
    while g.phase != phase {
        if g.phase == Phase::Lobby {
            let chair = g.chair;
            ok(g, chair, Command::BeginRound);
        } else {
            deadline(g);
        }
    }
}

pub fn event_types(out: &Outcome) -> Vec<&str> {
    out.events.iter().map(|e| e.event_type.as_str()).collect()
}

pub fn coins(g: &Game, id: PlayerId) -> i64 {
    g.player(id).unwrap().coins
}

pub fn player_mut(g: &mut Game, id: PlayerId) -> &mut Player {
    g.players.iter_mut().find(|p| p.id == id).unwrap()
}

pub fn order(kind: OrderKind, target: Option<&str>) -> Command {
    Command::SubmitOrder {
        kind,
        target: target.map(str::to_owned),
    }
}
