//! A balance check: simple bot strategies play many seeded games; no strategy may dominate and
//! every one must be able to win. `cargo test -p bot balance -- --nocapture` prints the table.

use super::*;
use crate::game::deck::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Invests early, prints money late.
    Builder,
    /// Prints money, props up stability with propaganda.
    Printer,
    /// Spies on the richest rival behind its own Security.
    Spy,
    /// Sanctions the richest rival and prints money.
    Hawk,
    /// Trade pacts with a fellow trader, invests.
    Trader,
    /// Hoards influence to win the World Arena.
    Diplomat,
}

const STYLES: [Style; 6] = [
    Style::Builder,
    Style::Printer,
    Style::Spy,
    Style::Hawk,
    Style::Trader,
    Style::Diplomat,
];

fn richest_rival(g: &Game, me: PlayerId) -> String {
    let p = g
        .players
        .iter()
        .filter(|p| p.id != me)
        .max_by_key(|p| (p.coins, -(p.seat as i64)))
        .unwrap();
    p.id.to_string()
}

fn orders(g: &Game, me: &Player, style: Style, partner: Option<PlayerId>) -> Vec<Command> {
    use OrderKind::*;
    let shaky = me.stability < 45;
    let late = g.round + 1 >= g.settings.rounds;
    let rival = richest_rival(g, me.id);
    let o = |k, t: Option<String>| Command::SubmitOrder { kind: k, target: t };
    match style {
        Style::Builder if !late => vec![
            o(Invest, None),
            o(if shaky { Propaganda } else { Security }, None),
        ],
        Style::Builder => vec![
            o(Stimulus, None),
            o(if shaky { Propaganda } else { Security }, None),
        ],
        Style::Printer => vec![
            o(Stimulus, None),
            o(if shaky { Propaganda } else { Diplomacy }, None),
        ],
        Style::Spy => vec![
            o(Espionage, Some(rival)),
            o(if shaky { Propaganda } else { Security }, None),
        ],
        Style::Hawk => vec![
            o(Sanctions, Some(rival)),
            o(if shaky { Propaganda } else { Stimulus }, None),
        ],
        Style::Trader => match partner {
            Some(p) => vec![
                o(TradePact, Some(p.to_string())),
                o(if late { Stimulus } else { Invest }, None),
            ],
            None => vec![o(Invest, None), o(Stimulus, None)],
        },
        Style::Diplomat => vec![
            o(Diplomacy, None),
            o(if shaky { Propaganda } else { Stimulus }, None),
        ],
    }
}

/// Bids about what a prize is worth, never everything.
fn bid(me: &Player, style: Style) -> Option<Command> {
    let (amount, currency) = match style {
        Style::Diplomat => (me.influence.min(8), Currency::Influence),
        _ if me.influence >= 6 => (me.influence / 2, Currency::Influence),
        _ => ((me.coins / 8).min(25), Currency::Coins),
    };
    (amount > 0).then_some(Command::Bid { amount, currency })
}

/// How often the drama happens.
#[derive(Default)]
struct Drama {
    falls: u32,
    fines: u32,
}

/// Plays one game to the end; returns the winner's style and every style's final coins.
fn play(seed: u64, styles: &[Style], drama: &mut Drama) -> (Style, Vec<(Style, i64)>) {
    let n = styles.len() as i64;
    let mut g = lobby(n);
    g = apply(Some(&g), &actor(1), Command::EndGame).unwrap().state;
    g = apply(Some(&g), &actor(1), start_cmd(seed, None)).unwrap().state;
    for id in 2..=n {
        g = apply(Some(&g), &actor(id), Command::JoinGame).unwrap().state;
    }
    let style = |id: PlayerId| styles[(id - 1) as usize];
    let partner =
        |id: PlayerId| (1..=n).find(|&q| q != id && style(q) == Style::Trader && style(id) == Style::Trader);
    ok(&mut g, 1, Command::BeginRound);
    while !g.is_finished() {
        for id in 1..=n {
            let me = g.player(id).unwrap().clone();
            let cmds = match g.phase {
                Phase::WorldArena => bid(&me, style(id)).into_iter().collect(),
                Phase::Orders if !me.fallen => orders(&g, &me, style(id), partner(id)),
                _ => vec![],
            };
            for cmd in cmds {
                // A bot may misjudge what it can afford; the engine refuses, the bot moves on.
                if let Ok(out) = apply(Some(&g), &actor(id), cmd) {
                    g = out.state;
                }
            }
        }
        for id in 1..=n {
            if g.phase.waits_for_players() {
                let out = ok(&mut g, id, Command::Ready);
                for e in out.events.iter().filter(|e| e.event_type == "round.resolved") {
                    drama.falls += e.payload["fallen"].as_array().map_or(0, |f| f.len() as u32);
                    drama.fines += u32::from(!e.payload["fine"].is_null());
                }
            }
        }
    }
    let coins = g
        .standings
        .iter()
        .map(|s| (style(s.player_id), s.coins))
        .collect();
    (style(g.standings[0].player_id), coins)
}

#[test]
fn no_strategy_dominates_and_every_strategy_can_win() {
    const GAMES: u64 = 600;
    let mut rng = SplitMix64::new(2024);
    let mut wins = [0u32; STYLES.len()];
    let mut seats = [0u32; STYLES.len()];
    let mut coins = [0i64; STYLES.len()];
    let mut drama = Drama::default();
    for seed in 0..GAMES {
        let n = 3 + (rng.next_u64() % 4) as usize;
        let mut styles: Vec<Style> = (0..n)
            .map(|_| STYLES[(rng.next_u64() % STYLES.len() as u64) as usize])
            .collect();
        rng.shuffle(&mut styles);
        let (winner, table) = play(seed, &styles, &mut drama);
        let at = |s: Style| STYLES.iter().position(|&x| x == s).unwrap();
        wins[at(winner)] += 1;
        for (s, c) in table {
            seats[at(s)] += 1;
            coins[at(s)] += c;
        }
    }
    let mut shares = Vec::new();
    for (i, s) in STYLES.iter().enumerate() {
        // Win rate relative to a fair share: 1.0 means as many wins as seats would predict.
        let expected = f64::from(seats[i]) / f64::from(seats.iter().sum::<u32>()) * GAMES as f64;
        let share = f64::from(wins[i]) / expected;
        println!(
            "{s:?}: {} wins of {} seats, {:.2}x fair share, average {} coins",
            wins[i],
            seats[i],
            share,
            coins[i] / i64::from(seats[i].max(1))
        );
        shares.push((s, share));
    }
    println!(
        "per game: {:.2} governments fall, {:.2} anti-monopoly fines",
        f64::from(drama.falls) / GAMES as f64,
        f64::from(drama.fines) / GAMES as f64
    );
    for (s, share) in shares {
        assert!(share > 0.6, "{s:?} rarely wins ({share:.2}x its fair share)");
        assert!(share < 1.6, "{s:?} dominates ({share:.2}x its fair share)");
    }
}
