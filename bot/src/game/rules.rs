//! Every number the game plays by, the fixed resolve order, and the `/rules` text built from
//! them, so the rules players read are the rules the engine applies.

use super::deck::{EventCard, Prize, signed};
use super::state::{Bid, Currency, OrderKind};

pub const MIN_PLAYERS: usize = 2;
pub const MAX_PLAYERS: usize = 8;
pub const DEFAULT_ROUNDS: u32 = 5;
/// One pass through the event deck: no card repeats within a game.
pub const MAX_ROUNDS: u32 = EventCard::ALL.len() as u32;

/// Countries are handed out by seat.
pub const COUNTRIES: [&str; MAX_PLAYERS] = [
    "Nordavia", "Sudmark", "Ostrava", "Westeria", "Meridia", "Borealis", "Caspiana", "Valdoria",
];

pub const START_COINS: i64 = 100;
pub const START_ECONOMY: i64 = 3;
pub const START_STABILITY: i64 = 60;
pub const START_INFLUENCE: i64 = 3;

pub const MIN_ECONOMY: i64 = 1;
pub const MAX_ECONOMY: i64 = 10;
pub const MAX_STABILITY: i64 = 100;

// Income phase.
pub const INCOME_PER_ECONOMY: i64 = 10;
pub const UPKEEP: i64 = 10;
/// Stability at which a (standing) government earns the stability bonus.
pub const STABLE_AT: i64 = 70;
pub const STABILITY_BONUS: i64 = 10;
/// Paid to the chair every income phase: the reason a vote of no confidence is worth calling.
pub const CHAIR_SALARY: i64 = 10;
pub const INFLUENCE_PER_ROUND: i64 = 1;

/// World Arena: one point of influence bids as much as this many coins.
pub const INFLUENCE_BID_VALUE: i64 = 5;

// Orders.
pub const MAX_ORDERS: usize = 2;
pub const INVEST_ECONOMY: i64 = 1;
pub const PROPAGANDA_STABILITY: i64 = 15;
pub const PROPAGANDA_INFLUENCE: i64 = 1;
pub const DIPLOMACY_INFLUENCE: i64 = 3;
pub const DIPLOMACY_STABILITY: i64 = 5;
pub const SECURITY_STABILITY: i64 = 5;
pub const STIMULUS_COINS: i64 = 30;
pub const STIMULUS_STABILITY: i64 = -15;
pub const TRADE_PACT_COINS: i64 = 20;
pub const SANCTIONS_COINS: i64 = 20;
pub const SANCTIONS_STABILITY: i64 = 10;
/// Share of the coins a sanctioned country loses that the sanctioning country seizes.
pub const SANCTIONS_SEIZED_PERCENT: i64 = 50;
/// Espionage steals this share of the target's treasury, within the bounds below.
pub const ESPIONAGE_PERCENT: i64 = 12;
pub const ESPIONAGE_MIN: i64 = 5;
pub const ESPIONAGE_MAX: i64 = 30;
/// A spy caught by the target's Security costs the spying country this much stability.
pub const ESPIONAGE_CAUGHT_STABILITY: i64 = 10;

// Anti-monopoly: holding more than half of all coins is fined at every resolve.
/// Share of the holding above half of all coins that the commission confiscates (rounded up);
/// it is split evenly among the other countries, the indivisible rest leaves the game.
pub const FINE_PERCENT_OF_EXCESS: i64 = 50;

/// Stability a caretaker government starts with after sitting out a round.
pub const CARETAKER_STABILITY: i64 = 30;

impl OrderKind {
    /// Paid at resolve; an order is accepted only if all of a player's orders are affordable.
    pub fn cost(self) -> i64 {
        match self {
            OrderKind::Security => 10,
            OrderKind::Propaganda => 15,
            OrderKind::Diplomacy => 5,
            OrderKind::Invest => 25,
            OrderKind::Stimulus => 0,
            OrderKind::TradePact => 0,
            OrderKind::Sanctions => 5,
            OrderKind::Espionage => 10,
        }
    }

    pub fn describe(self) -> String {
        match self {
            OrderKind::Security => format!(
                "{} stability; catches any spy sent against you this round and halves sanctions on you",
                signed(SECURITY_STABILITY)
            ),
            OrderKind::Propaganda => format!(
                "{} stability, {} influence",
                signed(PROPAGANDA_STABILITY),
                signed(PROPAGANDA_INFLUENCE)
            ),
            OrderKind::Diplomacy => format!(
                "{} influence, {} stability",
                signed(DIPLOMACY_INFLUENCE),
                signed(DIPLOMACY_STABILITY)
            ),
            OrderKind::Invest => format!(
                "{} economy (max {MAX_ECONOMY}): {INCOME_PER_ECONOMY} more income every round",
                signed(INVEST_ECONOMY)
            ),
            OrderKind::Stimulus => format!(
                "print money: {} coins, {} stability",
                signed(STIMULUS_COINS),
                signed(STIMULUS_STABILITY)
            ),
            OrderKind::TradePact => format!(
                "@country: if they order a trade pact with you this round too, both get {} coins",
                signed(TRADE_PACT_COINS)
            ),
            OrderKind::Sanctions => format!(
                "@country: freeze their assets: they lose {SANCTIONS_COINS} coins (you seize {SANCTIONS_SEIZED_PERCENT}% of that) \
                 and {SANCTIONS_STABILITY} stability; half if they ordered Security"
            ),
            OrderKind::Espionage => format!(
                "@country: steal {ESPIONAGE_PERCENT}% of their coins ({ESPIONAGE_MIN}..{ESPIONAGE_MAX}) and see their figures and orders; \
                 caught by their Security: nothing stolen, {} stability for you",
                signed(-ESPIONAGE_CAUGHT_STABILITY)
            ),
        }
    }
}

impl Bid {
    /// What the bid is worth in the World Arena.
    pub fn value(&self) -> i64 {
        match self.currency {
            Currency::Coins => self.amount,
            Currency::Influence => self.amount * INFLUENCE_BID_VALUE,
        }
    }
}

/// The steps of the resolve phase, applied in exactly this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    PayCosts,
    Orders(OrderKind),
    AntiMonopoly,
    Caretakers,
    Falls,
}

/// Orders of one kind apply together, in the order of [`OrderKind::ALL`]; within a kind, by seat.
pub const RESOLVE_ORDER: [Step; 12] = [
    Step::PayCosts,
    Step::Orders(OrderKind::Security),
    Step::Orders(OrderKind::Propaganda),
    Step::Orders(OrderKind::Diplomacy),
    Step::Orders(OrderKind::Invest),
    Step::Orders(OrderKind::Stimulus),
    Step::Orders(OrderKind::TradePact),
    Step::Orders(OrderKind::Sanctions),
    Step::Orders(OrderKind::Espionage),
    Step::AntiMonopoly,
    Step::Caretakers,
    Step::Falls,
];

impl Step {
    pub fn describe(self) -> String {
        match self {
            Step::PayCosts => "every order's cost is paid (an order you can no longer pay is void)".into(),
            Step::Orders(kind) => format!("{} orders", kind.title()),
            Step::AntiMonopoly => "the anti-monopoly check".into(),
            Step::Caretakers => format!(
                "countries that sat out the round get a caretaker government (stability at least {CARETAKER_STABILITY})"
            ),
            Step::Falls => "every government at 0 stability falls".into(),
        }
    }
}

/// The `/rules` text.
pub fn rules_text() -> String {
    let mut t = String::new();
    let mut w = |s: String| t.push_str(&s);
    w(format!(
        "🌍 NeMonopolia — the World Council\n\
         Each player heads a country. Be the richest after the last round — but nobody may become a monopoly.\n\n\
         Players: {MIN_PLAYERS}–{MAX_PLAYERS}. Rounds: {DEFAULT_ROUNDS} unless /startgame N sets 1–{MAX_ROUNDS}.\n\
         Every country starts with {START_COINS} coins, economy {START_ECONOMY}, stability {START_STABILITY}, influence {START_INFLUENCE}. \
         Your coins and influence are private (/status shows them to you); economy and stability are public.\n\n"
    ));
    w("🔁 A round: income → event → world arena → negotiations → orders → resolve.\n\
       Income, event and resolve happen by themselves; in the other phases type /ready, and the phase ends when everyone is ready. \
       The chair may move on with /next_phase once a majority (counting the chair) is ready. The chair starts round 1 with /begin_round.\n\n"
        .into());
    w(format!(
        "💰 Income: {INCOME_PER_ECONOMY} coins per economy level ({MIN_ECONOMY}–{MAX_ECONOMY}), {} influence, minus {UPKEEP} upkeep. \
         A standing government with stability {STABLE_AT}+ earns a {STABILITY_BONUS}-coin bonus; the chair draws a {CHAIR_SALARY}-coin salary.\n\n",
        signed(INFLUENCE_PER_ROUND)
    ));
    w(format!(
        "📰 Event: a world event card is drawn ({} cards, no repeats):\n",
        EventCard::ALL.len()
    ));
    for card in EventCard::ALL {
        w(format!("• {} — {}\n", card.title(), card.describe()));
    }
    w("Ties for richest or poorest: every tied country is hit.\n\n".into());
    w(format!(
        "🏟 World Arena: a prize is contested with one sealed bid each: /bid N coins or /bid N influence \
         (1 influence counts as {INFLUENCE_BID_VALUE} coins). A new bid replaces your old one. The highest bid wins and only the winner pays; \
         ties go to the more stable country, then to the earlier bid. Prizes:\n"
    ));
    for prize in Prize::ALL {
        w(format!("• {} — {}\n", prize.title(), prize.effect().describe()));
    }
    w("\n🤝 Negotiations: /give @player N sends coins. Promise, bargain, bluff.\n\n".into());
    w(format!(
        "📜 Orders: up to {MAX_ORDERS} secret decrees (/orders), two different ones; costs are paid at resolve:\n"
    ));
    for kind in OrderKind::ALL {
        w(format!(
            "• {} ({} coins) — {}\n",
            kind.title(),
            kind.cost(),
            kind.describe()
        ));
    }
    w("\n⚙️ Resolve applies all orders at once, in this order:\n".into());
    for (i, step) in RESOLVE_ORDER.iter().enumerate() {
        w(format!("{}. {}\n", i + 1, step.describe()));
    }
    w(format!(
        "\n⚖️ Anti-monopoly: a country holding more than half of all coins is fined {FINE_PERCENT_OF_EXCESS}% of what it holds above that half \
         (rounded up), shared evenly among the other countries.\n\
         💥 Stability 0 at resolve: the government falls. The country skips its orders next round and loses its stability bonuses \
         (counts as stability 0), then a caretaker government takes over.\n\n\
         🗳 /votum calls a vote of no confidence in the chair (any player but the chair, once per round; calling it is a yes). \
         Vote with the buttons; the vote closes as soon as its outcome is certain, or when the phase ends (missing votes count as abstentions). \
         If more than half of all players vote yes, the chair passes to the next country in seat order.\n\n\
         🏁 After the last round's resolve the richest country wins (ties: higher stability, then earlier join). \
         The chair may propose to end the game early with /endgame; it ends when a majority agreed with /endgame, \
         and then counts for nobody on the leaderboard. In the lobby the chair's /endgame closes the game at once."
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_text_prints_the_numbers_the_engine_uses() {
        let t = rules_text();
        for needle in [
            format!("{START_COINS} coins"),
            format!("{INCOME_PER_ECONOMY} coins per economy level"),
            format!("{UPKEEP} upkeep"),
            format!("{INFLUENCE_BID_VALUE} coins"),
            format!("{CHAIR_SALARY}-coin salary"),
            format!("{FINE_PERCENT_OF_EXCESS}%"),
        ] {
            assert!(t.contains(&needle), "rules miss {needle:?}");
        }
        for kind in OrderKind::ALL {
            assert!(t.contains(&format!("{} ({} coins)", kind.title(), kind.cost())));
        }
        for card in EventCard::ALL {
            assert!(t.contains(card.title()));
        }
        for prize in Prize::ALL {
            assert!(t.contains(prize.title()));
        }
    }

    #[test]
    fn the_resolve_order_covers_every_order_kind_once_in_kind_order() {
        let kinds: Vec<OrderKind> = RESOLVE_ORDER
            .iter()
            .filter_map(|s| match s {
                Step::Orders(k) => Some(*k),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, OrderKind::ALL);
        assert_eq!(RESOLVE_ORDER[0], Step::PayCosts);
    }

    #[test]
    fn there_are_enough_countries_and_order_kinds() {
        assert_eq!(COUNTRIES.len(), MAX_PLAYERS);
        assert!(OrderKind::ALL.len() >= 6);
    }
}
