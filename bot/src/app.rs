//! The bot's behaviour, whatever carries the messages: parse a chat message, run it through the
//! store, and say what to send where (the group, a player's private chat, buttons). The Telegram
//! adapter and the console both drive [`App::handle`], so they play exactly the same game.

use uuid::Uuid;

use crate::commands::{self, Input};
use crate::game::{self, Actor, Command, Game, OrderKind, Phase, PlayerId, Refusal};
use crate::store::{Executed, Origin, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    /// A group or supergroup: where games are played.
    Group,
    /// A user's private chat with the bot: private figures arrive here.
    Private,
}

/// One chat message (or button press) to handle.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub chat_id: i64,
    pub chat_kind: ChatKind,
    pub actor: Actor,
    pub text: &'a str,
    pub origin: Origin,
    /// Pressed as an inline button: a refusal becomes a short notice instead of a chat message.
    pub via_button: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// The chat the command came from.
    Chat,
    /// A player's private chat (the name is for a note in the group when it cannot be reached).
    Player { id: PlayerId, name: String },
}

/// An inline button; pressing it sends `command` as if its presser had typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub command: String,
}

fn button(label: impl Into<String>, command: impl Into<String>) -> Button {
    Button {
        label: label.into(),
        command: command.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: Dest,
    pub text: String,
    /// Rows of buttons; empty: none.
    pub buttons: Vec<Vec<Button>>,
}

impl Reply {
    fn chat(text: impl Into<String>) -> Self {
        Self {
            to: Dest::Chat,
            text: text.into(),
            buttons: Vec::new(),
        }
    }

    fn with_buttons(mut self, buttons: Vec<Vec<Button>>) -> Self {
        self.buttons = buttons;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A state-changing command was applied and committed.
    Accepted,
    /// Nothing to change: a read, a menu, help.
    Answered,
    /// Refused or malformed: nothing changed.
    Refused,
    /// A redelivered update that was handled before: nothing changed, nothing to say.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    pub replies: Vec<Reply>,
    /// For a button press: a short notice for the presser alone (a refusal, or "Done").
    pub notice: Option<String>,
    /// For a button press: the new text and buttons of the message that carried the button.
    pub edit: Option<Reply>,
}

impl Response {
    fn answered(replies: Vec<Reply>) -> Self {
        Self {
            status: Status::Answered,
            replies,
            notice: None,
            edit: None,
        }
    }

    fn refused(text: String, via_button: bool) -> Self {
        let (replies, notice) = if via_button {
            (Vec::new(), Some(text))
        } else {
            (vec![Reply::chat(text)], None)
        };
        Self {
            status: Status::Refused,
            replies,
            notice,
            edit: None,
        }
    }
}

const GROUP_ONLY: &str = "Games are played in group chats: add me to a group and type /startgame there.";
const LEADERBOARD_SIZE: i64 = 10;

#[derive(Clone)]
pub struct App {
    store: Store,
    bot_username: Option<String>,
    seed: Option<u64>,
}

impl App {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            bot_username: None,
            seed: None,
        }
    }

    /// Commands addressed to another bot (`/status@other_bot`) are then ignored.
    pub fn with_bot_username(mut self, username: Option<String>) -> Self {
        self.bot_username = username;
        self
    }

    /// Every new game uses this deck seed (reproducible demos) instead of a random one.
    pub fn with_seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one message. `None`: not a command for this bot; nothing to say.
    pub async fn handle(&self, msg: Incoming<'_>) -> Result<Option<Response>, StoreError> {
        let Some(parsed) = commands::parse(msg.text, self.bot_username.as_deref()) else {
            return Ok(None);
        };
        let input = match parsed {
            Ok(input) => input,
            Err(e) => return Ok(Some(Response::refused(e.to_string(), msg.via_button))),
        };
        if input.is_game_command() && msg.chat_kind == ChatKind::Private {
            return Ok(Some(Response::refused(GROUP_ONLY.into(), msg.via_button)));
        }
        let response = match input {
            Input::Start => Response::answered(vec![Reply::chat(start_text(msg.chat_kind))]),
            Input::Help => Response::answered(vec![Reply::chat(commands::help_text())]),
            Input::Rules => Response::answered(vec![Reply::chat(game::rules_text())]),
            Input::Leaderboard => self.leaderboard().await?,
            Input::Menu => self.menu(&msg).await?,
            Input::OrdersMenu => self.orders_menu(&msg).await?,
            Input::StartGame { rounds } => {
                let cmd = Command::StartGame {
                    game_id: Uuid::new_v4(),
                    chat_id: msg.chat_id,
                    seed: self.seed.unwrap_or_else(rand::random),
                    rounds,
                };
                self.run(&msg, cmd).await?
            }
            Input::Game(cmd) => self.run(&msg, cmd).await?,
        };
        Ok(Some(response))
    }

    async fn run(&self, msg: &Incoming<'_>, cmd: Command) -> Result<Response, StoreError> {
        let applied = match self
            .store
            .execute(msg.chat_id, &msg.actor, &cmd, msg.origin)
            .await?
        {
            Executed::Applied(applied) => applied,
            Executed::Refused(refusal) => return Ok(Response::refused(refusal.to_string(), msg.via_button)),
            Executed::Duplicate => {
                return Ok(Response {
                    status: Status::Duplicate,
                    replies: Vec::new(),
                    notice: None,
                    edit: None,
                });
            }
        };
        let outcome = applied.outcome;
        let state = &outcome.state;
        let mut replies: Vec<Reply> = outcome.public.into_iter().map(Reply::chat).collect();
        // A newly opened vote carries the ballot buttons.
        if cmd == Command::Votum && state.votum.is_some() {
            if let Some(first) = replies.first_mut() {
                first.buttons = vote_buttons();
            }
        }
        replies.extend(outcome.private.into_iter().map(|p| {
            Reply {
                to: Dest::Player {
                    id: p.to,
                    name: state
                        .player(p.to)
                        .map_or_else(|| p.to.to_string(), |pl| pl.name.clone()),
                },
                text: p.text,
                buttons: Vec::new(),
            }
        }));
        let edit = (msg.via_button && matches!(cmd, Command::VotumVote { .. })).then(|| votum_message(state));
        let read_only = cmd.is_read_only();
        Ok(Response {
            status: if read_only {
                Status::Answered
            } else {
                Status::Accepted
            },
            replies,
            notice: (msg.via_button && !read_only).then(|| "✅ Done".to_owned()),
            edit,
        })
    }

    async fn leaderboard(&self) -> Result<Response, StoreError> {
        let rows = self.store.leaderboard(LEADERBOARD_SIZE).await?;
        let text = if rows.is_empty() {
            "🏆 No finished games on the leaderboard yet.".to_owned()
        } else {
            let lines: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{}. {} — {} win{}, {} game{}",
                        r.rank,
                        r.name,
                        r.wins,
                        plural(r.wins),
                        r.games,
                        plural(r.games)
                    )
                })
                .collect();
            format!("🏆 Leaderboard (all chats):\n{}", lines.join("\n"))
        };
        Ok(Response::answered(vec![Reply::chat(text)]))
    }

    async fn menu(&self, msg: &Incoming<'_>) -> Result<Response, StoreError> {
        let game = self.store.latest_game(msg.chat_id).await?;
        let (text, buttons) = match game.as_ref().filter(|g| !g.is_finished()) {
            None => (
                "🎛 No game is open here.".to_owned(),
                vec![
                    vec![button("🌍 Start a game", "/startgame")],
                    vec![
                        button("📖 Rules", "/rules"),
                        button("🏆 Leaderboard", "/leaderboard"),
                    ],
                ],
            ),
            Some(g) if g.phase == Phase::Lobby => (
                format!("🎛 Lobby: {} player(s).", g.players.len()),
                vec![
                    vec![
                        button("👋 Join", "/joingame"),
                        button("🔔 Begin round", "/begin_round"),
                    ],
                    vec![button("📊 Status", "/status"), button("📖 Rules", "/rules")],
                    vec![button("🏁 End game", "/endgame")],
                ],
            ),
            Some(g) => {
                let mut rows = vec![
                    vec![
                        button("✅ Ready", "/ready"),
                        button("⏭ Next phase", "/next_phase"),
                    ],
                    vec![button("📊 Status", "/status"), button("🗺 Game info", "/gameinfo")],
                ];
                if g.phase == Phase::Orders {
                    rows.push(vec![button("📜 Decrees", "/orders")]);
                }
                rows.push(if g.votum.is_some() {
                    vec![
                        button("👍 Remove the chair", "/vote yes"),
                        button("👎 Keep the chair", "/vote no"),
                    ]
                } else {
                    vec![button("🗳 Vote of no confidence", "/votum")]
                });
                rows.push(vec![
                    button("📖 Rules", "/rules"),
                    button("🏆 Leaderboard", "/leaderboard"),
                ]);
                rows.push(vec![button("🏁 End game", "/endgame")]);
                (
                    format!("🎛 Round {}/{} · {}", g.round, g.settings.rounds, g.phase),
                    rows,
                )
            }
        };
        Ok(Response::answered(vec![Reply::chat(text).with_buttons(buttons)]))
    }

    async fn orders_menu(&self, msg: &Incoming<'_>) -> Result<Response, StoreError> {
        let g = match self.store.latest_game(msg.chat_id).await? {
            None => Err(Refusal::NoGame),
            Some(g) if g.is_finished() => Err(Refusal::GameFinished),
            Some(g) if g.phase != Phase::Orders => Err(Refusal::WrongPhase {
                what: "Orders can only be given",
                allowed: Phase::Orders,
                now: g.phase,
            }),
            Some(g) => Ok(g),
        };
        match g {
            Err(refusal) => Ok(Response::refused(refusal.to_string(), msg.via_button)),
            Ok(g) => Ok(Response::answered(vec![orders_message(&g)])),
        }
    }
}

fn plural(n: i32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn start_text(kind: ChatKind) -> String {
    match kind {
        ChatKind::Private => "👋 NeMonopolia is alive. Your private figures will arrive in this chat. \
             Add me to a group and type /startgame there; /rules explains the game."
            .into(),
        ChatKind::Group => {
            "👋 NeMonopolia is alive. /startgame opens a game here; /help lists the commands.".into()
        }
    }
}

fn vote_buttons() -> Vec<Vec<Button>> {
    vec![vec![
        button("👍 Yes, remove the chair", "/vote yes"),
        button("👎 No", "/vote no"),
    ]]
}

/// The ballot message after a vote: the tally while the vote is open, closed afterwards.
fn votum_message(g: &Game) -> Reply {
    match &g.votum {
        Some(v) => Reply::chat(format!(
            "🗳 Vote of no confidence #{} in the chair, {}: {} yes, {} no of {}.",
            v.number,
            g.chair_player().map_or(String::new(), |p| p.handle()),
            v.yes(),
            v.no(),
            g.players.len()
        ))
        .with_buttons(vote_buttons()),
        None => Reply::chat("🗳 This vote of no confidence is closed."),
    }
}

/// The decree menu: one button per order, and per target for orders that need one.
fn orders_message(g: &Game) -> Reply {
    let mut lines = vec![format!(
        "📜 Decrees for round {} — up to {} each, secret until the resolve:",
        g.round,
        game::rules::MAX_ORDERS
    )];
    let mut untargeted = Vec::new();
    let mut targeted = Vec::new();
    for kind in OrderKind::ALL {
        lines.push(format!(
            "• {} ({} coins): {}",
            kind.title(),
            kind.cost(),
            kind.describe()
        ));
        if kind.needs_target() {
            for p in &g.players {
                targeted.push(button(
                    format!("{} → {}", kind.title(), p.country),
                    format!("/orders {} {}", kind.as_str(), p.id),
                ));
            }
        } else {
            untargeted.push(button(kind.title(), format!("/orders {}", kind.as_str())));
        }
    }
    let mut rows: Vec<Vec<Button>> = untargeted.chunks(3).map(<[Button]>::to_vec).collect();
    rows.extend(targeted.chunks(2).map(<[Button]>::to_vec));
    rows.push(vec![button("↩️ Withdraw my decrees", "/orders clear")]);
    Reply::chat(lines.join("\n")).with_buttons(rows)
}
