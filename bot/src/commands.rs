//! Chat text → what the user asks. The Telegram adapter and the console share this parser, so
//! both accept the same commands and answer malformed ones with the same short usage line.

use thiserror::Error;

use crate::game::refusal::echo;
use crate::game::rules::MAX_ROUNDS;
use crate::game::{Command, Currency, OrderKind, Refusal, parse_amount, parse_whole};

/// A parsed chat command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `/start`: the bot is alive (in a private chat: it may now message this user).
    Start,
    Help,
    Rules,
    Leaderboard,
    /// `/menu`: the phase's buttons.
    Menu,
    /// `/orders` without arguments: the decree buttons.
    OrdersMenu,
    /// `/startgame [rounds]`; the game id and the deck's seed are added by [`crate::app`].
    StartGame {
        rounds: Option<u32>,
    },
    /// Any other engine command.
    Game(Command),
}

impl Input {
    /// Commands about a game: they need a group chat.
    pub fn is_game_command(&self) -> bool {
        matches!(
            self,
            Input::Menu | Input::OrdersMenu | Input::StartGame { .. } | Input::Game(_)
        )
    }
}

/// Why a command could not be parsed; `Display` is the chat reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("Unknown command /{0}. /help lists the commands.")]
    Unknown(String),
    #[error("Usage: {0}")]
    Usage(&'static str),
    #[error("{0}")]
    Refused(#[from] Refusal),
}

/// One line of `/help` and of the command list Telegram shows.
pub struct CommandHelp {
    pub name: &'static str,
    pub args: &'static str,
    pub about: &'static str,
}

const fn help(name: &'static str, args: &'static str, about: &'static str) -> CommandHelp {
    CommandHelp { name, args, about }
}

pub const COMMANDS: &[CommandHelp] = &[
    help("start", "", "check that the bot is alive"),
    help("startgame", "[rounds]", "open a game in this group"),
    help("joingame", "", "join the game in the lobby"),
    help("begin_round", "", "the chair starts round 1"),
    help("ready", "", "you are done with this phase"),
    help("next_phase", "", "the chair moves on once a majority is ready"),
    help("menu", "", "buttons for this phase"),
    help(
        "status",
        "",
        "phase, round, who is ready; your figures in private",
    ),
    help("gameinfo", "", "the status and every country's public figures"),
    help("bid", "N [coins|influence]", "a sealed World Arena bid"),
    help("give", "@player N", "send coins in the negotiations"),
    help(
        "orders",
        "[kind [@player] | clear]",
        "secret decrees (no argument: buttons)",
    ),
    help("votum", "", "call a vote of no confidence in the chair"),
    help("vote", "yes|no", "vote in the open vote of no confidence"),
    help("votum_result", "", "how the open vote stands and when it closes"),
    help(
        "endgame",
        "",
        "end the game early (the chair proposes, a majority agrees)",
    ),
    help("rules", "", "the rules the game plays by"),
    help("leaderboard", "", "wins and games across all chats"),
    help("help", "", "this list"),
];

pub fn help_text() -> String {
    let lines: Vec<String> = COMMANDS
        .iter()
        .map(|c| {
            let args = if c.args.is_empty() {
                String::new()
            } else {
                format!(" {}", c.args)
            };
            format!("/{}{args} — {}", c.name, c.about)
        })
        .collect();
    format!("NeMonopolia commands:\n{}", lines.join("\n"))
}

const GIVE_USAGE: &str = "/give @player N, e.g. /give @bob 20";
const BID_USAGE: &str = "/bid N [coins|influence], e.g. /bid 20 or /bid 3 influence";
const ORDERS_USAGE: &str = "/orders [kind [@player] | clear], e.g. /orders invest or /orders sanctions @bob";
const VOTE_USAGE: &str = "/vote yes or /vote no";

/// Parses one message. `None`: not a command, or a command addressed to another bot
/// (`/status@OtherBot`); such messages get no reply. `bot_username` is ours, without `@`.
pub fn parse(text: &str, bot_username: Option<&str>) -> Option<Result<Input, ParseError>> {
    let rest = text.trim().strip_prefix('/')?;
    let mut words = rest.split_whitespace();
    let head = words.next()?;
    let (name, addressee) = match head.split_once('@') {
        Some((name, to)) => (name, Some(to)),
        None => (head, None),
    };
    if let (Some(to), Some(me)) = (addressee, bot_username) {
        if !to.eq_ignore_ascii_case(me) {
            return None;
        }
    }
    let args: Vec<&str> = words.collect();
    Some(parse_command(&name.to_lowercase(), &args))
}

/// `/startgame N`: any number out of range, negative or huge, gets the same refusal as 0.
fn parse_rounds(typed: &str) -> Result<u32, Refusal> {
    let invalid = || Refusal::InvalidRounds {
        got: echo(typed),
        min: 1,
        max: MAX_ROUNDS,
    };
    match parse_whole(typed) {
        Ok(Some(n)) => u32::try_from(n)
            .ok()
            .filter(|r| (1..=MAX_ROUNDS).contains(r))
            .ok_or_else(invalid),
        Ok(None) | Err(_) => Err(invalid()),
    }
}

fn parse_command(name: &str, args: &[&str]) -> Result<Input, ParseError> {
    let game = |c: Command| Ok(Input::Game(c));
    match (name, args) {
        ("start", _) => Ok(Input::Start),
        ("help", _) => Ok(Input::Help),
        ("rules", _) => Ok(Input::Rules),
        ("leaderboard", _) => Ok(Input::Leaderboard),
        ("menu", _) => Ok(Input::Menu),
        ("startgame", []) => Ok(Input::StartGame { rounds: None }),
        ("startgame", [n]) => Ok(Input::StartGame {
            rounds: Some(parse_rounds(n)?),
        }),
        ("startgame", _) => Err(ParseError::Usage("/startgame [rounds], e.g. /startgame 3")),
        ("joingame", _) => game(Command::JoinGame),
        ("begin_round", _) => game(Command::BeginRound),
        ("ready", _) => game(Command::Ready),
        ("next_phase", _) => game(Command::NextPhase),
        ("status", _) => game(Command::Status),
        ("gameinfo", _) => game(Command::GameInfo),
        ("endgame", _) => game(Command::EndGame),
        ("votum", _) => game(Command::Votum),
        ("votum_result", _) => game(Command::VotumResult),
        ("vote", [v]) => match v.to_lowercase().as_str() {
            "yes" | "y" | "da" => game(Command::VotumVote { yes: true }),
            "no" | "n" | "net" => game(Command::VotumVote { yes: false }),
            _ => Err(ParseError::Usage(VOTE_USAGE)),
        },
        ("vote", _) => Err(ParseError::Usage(VOTE_USAGE)),
        ("give", [to, amount]) => game(Command::Give {
            to: (*to).to_owned(),
            amount: parse_amount(amount)?,
        }),
        ("give", _) => Err(ParseError::Usage(GIVE_USAGE)),
        ("bid", [amount]) => game(Command::Bid {
            amount: parse_amount(amount)?,
            currency: Currency::Coins,
        }),
        ("bid", [amount, currency]) => game(Command::Bid {
            amount: parse_amount(amount)?,
            currency: currency.parse()?,
        }),
        ("bid", _) => Err(ParseError::Usage(BID_USAGE)),
        ("orders", []) => Ok(Input::OrdersMenu),
        ("orders", [clear]) if clear.eq_ignore_ascii_case("clear") => game(Command::ClearOrders),
        ("orders", [kind]) => game(Command::SubmitOrder {
            kind: kind.parse::<OrderKind>()?,
            target: None,
        }),
        // Two words may be one kind: "/orders trade pact", as the menu names it.
        ("orders", [first, second]) => match format!("{first} {second}").parse::<OrderKind>() {
            Ok(kind) => game(Command::SubmitOrder { kind, target: None }),
            Err(_) => game(Command::SubmitOrder {
                kind: first.parse::<OrderKind>()?,
                target: Some((*second).to_owned()),
            }),
        },
        ("orders", [first, second, target]) => match format!("{first} {second}").parse::<OrderKind>() {
            Ok(kind) => game(Command::SubmitOrder {
                kind,
                target: Some((*target).to_owned()),
            }),
            Err(_) => Err(ParseError::Usage(ORDERS_USAGE)),
        },
        ("orders", _) => Err(ParseError::Usage(ORDERS_USAGE)),
        (other, _) => Err(ParseError::Unknown(echo(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Input {
        parse(text, Some("NemoBot")).unwrap().unwrap()
    }

    fn err(text: &str) -> String {
        parse(text, Some("NemoBot")).unwrap().unwrap_err().to_string()
    }

    #[test]
    fn game_commands_map_to_engine_commands() {
        assert_eq!(ok("/joingame"), Input::Game(Command::JoinGame));
        assert_eq!(ok("  /READY  "), Input::Game(Command::Ready));
        assert_eq!(ok("/startgame"), Input::StartGame { rounds: None });
        assert_eq!(ok("/startgame 3"), Input::StartGame { rounds: Some(3) });
        assert_eq!(
            ok("/give @bob 20"),
            Input::Game(Command::Give {
                to: "@bob".into(),
                amount: 20
            })
        );
        assert_eq!(
            ok("/bid 3 influence"),
            Input::Game(Command::Bid {
                amount: 3,
                currency: Currency::Influence
            })
        );
        assert_eq!(
            ok("/bid 15"),
            Input::Game(Command::Bid {
                amount: 15,
                currency: Currency::Coins
            })
        );
        assert_eq!(ok("/orders"), Input::OrdersMenu);
        assert_eq!(ok("/orders clear"), Input::Game(Command::ClearOrders));
        assert_eq!(
            ok("/orders sanctions 42"),
            Input::Game(Command::SubmitOrder {
                kind: OrderKind::Sanctions,
                target: Some("42".into())
            })
        );
        assert_eq!(ok("/vote no"), Input::Game(Command::VotumVote { yes: false }));
        assert_eq!(
            ok("/orders trade pact @bob"),
            Input::Game(Command::SubmitOrder {
                kind: OrderKind::TradePact,
                target: Some("@bob".into())
            })
        );
        assert_eq!(
            ok("/orders Trade pact"),
            Input::Game(Command::SubmitOrder {
                kind: OrderKind::TradePact,
                target: None
            })
        );
        assert_eq!(ok("/status@nemobot"), Input::Game(Command::Status));
    }

    #[test]
    fn other_bots_commands_and_plain_text_are_ignored() {
        assert_eq!(parse("/status@OtherBot", Some("NemoBot")), None);
        assert_eq!(parse("hello there", Some("NemoBot")), None);
        assert_eq!(parse("/", Some("NemoBot")), None);
        // The console has no bot name: an addressed command is still ours.
        assert_eq!(parse("/ready@Any", None), Some(Ok(Input::Game(Command::Ready))));
    }

    #[test]
    fn bad_input_gets_a_clear_reply() {
        assert_eq!(err("/dance"), "Unknown command /dance. /help lists the commands.");
        assert_eq!(err("/give @bob"), format!("Usage: {GIVE_USAGE}"));
        assert_eq!(
            err("/give @bob lots"),
            "“lots” is not an amount: use a whole number, like 20."
        );
        assert_eq!(err("/give @bob -5"), "The amount must be positive; got -5.");
        assert_eq!(
            err("/bid 5 gold"),
            "Unknown currency “gold”: bid coins or influence."
        );
        assert_eq!(err("/bid"), format!("Usage: {BID_USAGE}"));
        assert!(err("/orders dance").starts_with("Unknown order “dance”"));
        assert_eq!(err("/orders a b c"), format!("Usage: {ORDERS_USAGE}"));
        assert_eq!(err("/vote maybe"), format!("Usage: {VOTE_USAGE}"));
        // Every bad number of rounds gets one and the same kind of reply.
        for bad in ["-1", "0", "many", "99999999999999999999", "15"] {
            assert_eq!(
                err(&format!("/startgame {bad}")),
                format!("Rounds must be a whole number from 1 to 14; got {bad}.")
            );
        }
        assert_eq!(
            err("/bid 99999999999999999999"),
            "99999999999999999999 is far more than anyone has: use a smaller amount."
        );
        assert_eq!(
            err("/orders s"),
            "“s” could be security, stimulus, sanctions: type more of the name."
        );
        let long = format!("/{}", "z".repeat(4000));
        assert!(err(&long).chars().count() < 140, "{}", err(&long));
    }

    #[test]
    fn help_lists_every_command_the_parser_knows() {
        for c in COMMANDS {
            let r = parse(&format!("/{}", c.name), None).unwrap();
            assert!(
                !matches!(r, Err(ParseError::Unknown(_))),
                "/{} is listed but not parsed",
                c.name
            );
            assert!(help_text().contains(&format!("/{}", c.name)));
        }
    }
}
