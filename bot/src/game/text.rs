//! Chat texts that show the state: status, tables, private figures, final standings.

use super::rules::{MAX_ORDERS, MAX_PLAYERS, MIN_PLAYERS};
use super::state::{Currency, Game, Order, Phase, Player};

/// "1 bid", "3 bids".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "1 coin", "20 coins", "3 influence".
pub fn amount(n: i64, currency: Currency) -> String {
    match currency {
        Currency::Coins if n == 1 => "1 coin".to_owned(),
        Currency::Coins => format!("{n} coins"),
        Currency::Influence => format!("{n} influence"),
    }
}

/// A player's private figures.
pub fn figures(p: &Player) -> String {
    format!(
        "{}: {}, economy {}, stability {}, influence {}{}",
        p.country,
        amount(p.coins, Currency::Coins),
        p.economy,
        p.stability,
        p.influence,
        if p.fallen { " — government fallen" } else { "" }
    )
}

pub fn order_label(g: &Game, o: &Order) -> String {
    match o.target.and_then(|t| g.player(t)) {
        Some(t) => format!("{} → {}", o.kind.title(), t.country),
        None => o.kind.title().to_owned(),
    }
}

/// The public figures of every country.
pub fn table(g: &Game) -> String {
    let rows: Vec<String> = g
        .players
        .iter()
        .map(|p| {
            format!(
                "{}. {} — {}{} · economy {} · stability {}{}",
                p.seat,
                p.country,
                p.name,
                if p.id == g.chair { " 👑" } else { "" },
                p.economy,
                p.stability,
                if p.fallen { " · 💥 fallen" } else { "" }
            )
        })
        .collect();
    rows.join("\n")
}

pub fn status(g: &Game) -> String {
    let chair = g.chair_player().map_or(String::new(), Player::handle);
    let mut lines = match g.phase {
        Phase::Finished => return final_standings(g),
        Phase::Lobby => vec![
            format!(
                "🌍 Lobby: {}/{MAX_PLAYERS} players ({}). Chair: {chair}. Rounds: {}.",
                g.players.len(),
                names(g.players.iter()),
                g.settings.rounds
            ),
            format!(
                "Join with /joingame; the chair starts with /begin_round (at least {MIN_PLAYERS} players)."
            ),
        ],
        phase => {
            let mut l = vec![format!(
                "🌍 Round {}/{} · {phase} · chair: {chair}",
                g.round, g.settings.rounds
            )];
            if let Some(card) = g.current_event() {
                l.push(format!("📰 {}: {}", card.title(), card.describe()));
            }
            if let (Phase::WorldArena, Some(prize)) = (phase, g.current_prize()) {
                l.push(format!(
                    "🏟 Prize: {} ({}); {} so far.",
                    prize.title(),
                    prize.effect().describe(),
                    count(g.bids.len(), "sealed bid", "sealed bids")
                ));
            }
            if phase == Phase::Orders {
                let given: Vec<String> = g
                    .players
                    .iter()
                    .map(|p| format!("{} {}/{MAX_ORDERS}", p.name, g.orders_of(p.id).count()))
                    .collect();
                l.push(format!("📜 Decrees: {}.", given.join(", ")));
            }
            let waiting: Vec<&Player> = g.players.iter().filter(|p| !p.ready).collect();
            l.push(format!(
                "Ready: {}/{}{}",
                g.players.len() - waiting.len(),
                g.players.len(),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(" (waiting for {})", names(waiting.into_iter()))
                }
            ));
            l
        }
    };
    if let Some(v) = &g.votum {
        lines.push(format!(
            "🗳 Vote of no confidence #{}: {} yes, {} no of {}.",
            v.number,
            v.yes(),
            v.no(),
            g.players.len()
        ));
    }
    lines.join("\n")
}

/// `/gameinfo`: the status plus the table of countries.
pub fn info(g: &Game) -> String {
    format!("{}\n\n{}", status(g), table(g))
}

/// What only the player may see: treasury, influence, own bid and decrees.
pub fn private_status(g: &Game, p: &Player) -> String {
    let mut t = format!("🔒 {}", figures(p));
    if let Some(b) = g.bid_of(p.id) {
        t.push_str(&format!(
            "\nYour bid: {} (worth {}).",
            amount(b.amount, b.currency),
            b.value()
        ));
    }
    let orders: Vec<String> = g.orders_of(p.id).map(|o| order_label(g, o)).collect();
    if !orders.is_empty() {
        t.push_str(&format!("\nYour decrees: {}.", orders.join(", ")));
    }
    t
}

pub fn final_standings(g: &Game) -> String {
    let head = if g.round == 0 {
        "🏁 The game was ended in the lobby; it counts for nobody.".to_owned()
    } else if g.ended_early {
        format!(
            "🏁 The council ended the game early, in round {}; it counts for nobody on the leaderboard.",
            g.round
        )
    } else {
        let plural = if g.round == 1 { "" } else { "s" };
        format!("🏁 Game over after {} round{plural}!", g.round)
    };
    let rows: Vec<String> = g
        .standings
        .iter()
        .map(|s| {
            format!(
                "{}. {} ({}) — {} · economy {} · stability {}",
                s.rank,
                s.name,
                s.country,
                amount(s.coins, Currency::Coins),
                s.economy,
                s.stability
            )
        })
        .collect();
    let winner = match g.standings.first() {
        Some(w) if g.is_rated() => format!("\n🏆 {} of {} wins!", w.name, w.country),
        _ => String::new(),
    };
    format!("{head}\n{}{winner}", rows.join("\n"))
}

fn names<'a>(ps: impl Iterator<Item = &'a Player>) -> String {
    ps.map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}
