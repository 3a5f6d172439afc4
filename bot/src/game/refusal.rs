//! Why a command was refused. `Display` is the short reply the chat sees; a refusal changes
//! nothing.

use thiserror::Error;

use super::state::{OrderKind, Phase};

fn order_names() -> String {
    OrderKind::ALL.map(OrderKind::as_str).join(", ")
}

fn kinds(ks: &[OrderKind]) -> String {
    ks.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// The most characters of a player's own input a reply repeats.
pub const ECHO_MAX: usize = 64;

/// Typed text as a reply repeats it: trimmed and cut to [`ECHO_MAX`] characters, so a
/// 4000-character argument never comes back as a 4000-character reply.
pub fn echo(typed: &str) -> String {
    let typed = typed.trim();
    match typed.char_indices().nth(ECHO_MAX) {
        None => typed.to_owned(),
        Some((cut, _)) => format!("{}…", &typed[..cut]),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("No game in this chat. Start one with /startgame.")]
    NoGame,
    #[error("A game is already open in this chat (phase: {0}). The chair can /endgame it.")]
    GameAlreadyOpen(Phase),
    #[error("The game is finished. Start a new one with /startgame.")]
    GameFinished,
    #[error("You are not in this game.")]
    NotAPlayer,
    #[error("Only the chair can do that.")]
    NotChair,
    /// `what` reads like "Orders can only be given".
    #[error("{what} in the {allowed} phase; now: {now}")]
    WrongPhase {
        what: &'static str,
        allowed: Phase,
        now: Phase,
    },
    #[error("Nothing to be ready for in the lobby: the chair starts the game with /begin_round.")]
    NothingToBeReadyFor,
    #[error("You are already ready.")]
    AlreadyReady,
    #[error("The game is full ({max} players).")]
    GameFull { max: usize },
    #[error("You have already joined.")]
    AlreadyJoined,
    #[error("Need at least {need} players; there are {have}.")]
    NotEnoughPlayers { have: usize, need: usize },
    #[error("Rounds must be a whole number from {min} to {max}; got {got}.")]
    InvalidRounds { got: String, min: u32, max: u32 },
    #[error("“{0}” is not an amount: use a whole number, like 20.")]
    MalformedAmount(String),
    #[error("{0} is far more than anyone has: use a smaller amount.")]
    AmountTooLarge(String),
    #[error("The amount must be positive; got {0}.")]
    NonPositiveAmount(i64),
    #[error("Not enough {what}: you need {need}, you have {have}.")]
    InsufficientFunds {
        what: &'static str,
        need: i64,
        have: i64,
    },
    #[error("No player “{0}” in this game.")]
    UnknownTarget(String),
    #[error("“{0}” matches several players; use their @username.")]
    AmbiguousTarget(String),
    #[error("You cannot target yourself.")]
    TargetIsSelf,
    #[error("{} needs a target: /orders {} @player", .0.title(), .0.as_str())]
    TargetRequired(OrderKind),
    #[error("{} takes no target.", .0.title())]
    TargetNotAllowed(OrderKind),
    #[error("Unknown order “{}”. Orders: {}.", .0, order_names())]
    UnknownOrderKind(String),
    #[error("“{typed}” could be {}: type more of the name.", kinds(.matches))]
    AmbiguousOrderKind { typed: String, matches: Vec<OrderKind> },
    #[error("Unknown currency “{0}”: bid coins or influence.")]
    UnknownCurrency(String),
    #[error("You already gave {max} orders this round.")]
    TooManyOrders { max: usize },
    #[error("You already gave that order this round; pick a different one.")]
    DuplicateOrder,
    #[error("You have no orders to withdraw.")]
    NoOrders,
    #[error("Your government has fallen: you sit out the orders this round.")]
    GovernmentFallen,
    #[error("A vote of no confidence is already open.")]
    VotumAlreadyOpen,
    #[error("You already called a vote of no confidence this round.")]
    VotumLimit,
    #[error("No vote of no confidence is open.")]
    NoVotum,
    #[error("You have already voted.")]
    AlreadyVoted,
    #[error("You chair the council: a vote of no confidence is for the others to call.")]
    ChairCannotCallVotum,
    #[error("The vote stays open until everyone has voted or this phase ends ({voted} of {players} voted).")]
    VotumStillOpen { voted: usize, players: usize },
    #[error(
        "Not yet: {ready} of {players} ready, counting you; /next_phase needs a majority ({need}) or the phase's deadline."
    )]
    NextPhaseNeedsMajority {
        ready: usize,
        players: usize,
        need: usize,
    },
    #[error("Only the chair can propose to end the game; the others then agree with /endgame.")]
    EndGameNotProposed,
    #[error("You already agreed to end the game ({votes} of {need} needed).")]
    AlreadyAgreedToEnd { votes: usize, need: usize },
    #[error("That deadline has passed already.")]
    StaleDeadline,
}
