//! The automatic parts of a round: income, the world event, the World Arena's verdict, and the
//! resolve of all orders in [`RESOLVE_ORDER`].

use std::collections::HashSet;

use serde_json::json;

use super::deck::{Who, signed};
use super::engine::{MoneyRule, Tx};
use super::events::*;
use super::rules::*;
use super::state::*;
use super::text;

impl Tx<'_> {
    /// Pays every country's income; returns each player's private breakdown (sent after the
    /// event card, with the figures as they then are).
    pub(super) fn income(&mut self) -> Vec<Vec<String>> {
        let mut breakdown = Vec::new();
        for i in 0..self.g.players.len() {
            let p = &self.g.players[i];
            let earned = p.economy * INCOME_PER_ECONOMY;
            let bonus = p.effective_stability() >= STABLE_AT;
            let chair = p.id == self.g.chair;
            let mut lines = vec![format!("{} from economy", signed(earned))];
            self.money(i, earned, MoneyRule::Income);
            if bonus {
                self.money(i, STABILITY_BONUS, MoneyRule::StabilityBonus);
                lines.push(format!("{} stability bonus", signed(STABILITY_BONUS)));
            }
            if chair {
                self.money(i, CHAIR_SALARY, MoneyRule::ChairSalary);
                lines.push(format!("{} chair's salary", signed(CHAIR_SALARY)));
            }
            let paid = self.money(i, -UPKEEP, MoneyRule::Upkeep);
            lines.push(format!("{} upkeep", signed(paid)));
            self.add_influence(i, INFLUENCE_PER_ROUND);
            breakdown.push(lines);
        }
        self.say(format!(
            "💰 Income: {INCOME_PER_ECONOMY} coins per economy level, {} influence, {} upkeep; \
             stable governments ({STABLE_AT}+) earn {STABILITY_BONUS} more, the chair {CHAIR_SALARY}.",
            signed(INFLUENCE_PER_ROUND),
            signed(-UPKEEP)
        ));
        breakdown
    }

    /// The countries a card rule hits, in seat order.
    fn who(&self, who: Who) -> Vec<usize> {
        let ps = &self.g.players;
        let max = ps.iter().map(|p| p.coins).max().unwrap_or_default();
        let min = ps.iter().map(|p| p.coins).min().unwrap_or_default();
        (0..ps.len())
            .filter(|&i| {
                let p = &ps[i];
                match who {
                    Who::All => true,
                    Who::EconomyAtLeast(n) => p.economy >= n,
                    Who::StabilityAtLeast(n) => p.effective_stability() >= n,
                    Who::StabilityBelow(n) => p.effective_stability() < n,
                    Who::Richest => p.coins == max,
                    Who::Poorest => p.coins == min,
                    Who::Chair => p.id == self.g.chair,
                }
            })
            .collect()
    }

    pub(super) fn draw_card(&mut self) {
        let Some(card) = self.g.current_event() else {
            return;
        };
        let round = self.g.round;
        let mut hit = Vec::new();
        for rule in card.rules() {
            let targets = self.who(rule.who);
            for &i in &targets {
                self.apply_effect(i, rule.effect, MoneyRule::Event);
            }
            let names: Vec<&str> = targets
                .iter()
                .map(|&i| self.g.players[i].country.as_str())
                .collect();
            hit.push(format!(
                "{}: {}",
                rule.effect.describe(),
                if names.is_empty() {
                    "nobody".to_owned()
                } else {
                    names.join(", ")
                }
            ));
        }
        self.emit(
            CARD_DRAWN,
            self.key(&format!("r{round}")),
            json!({"round": round, "card": card, "title": card.title()}),
        );
        self.say(format!(
            "📰 World event — {}. {}\n{}",
            card.title(),
            card.flavor(),
            hit.join("\n")
        ));
    }

    /// The highest bid wins (ties: more stable, then earlier); only the winner pays. A bid the
    /// bidder can no longer cover is void.
    pub(super) fn resolve_arena(&mut self) {
        let round = self.g.round;
        let Some(prize) = self.g.current_prize() else {
            return;
        };
        let bids = std::mem::take(&mut self.g.bids);
        let idx = |id: PlayerId| self.g.players.iter().position(|p| p.id == id);
        let winner = bids
            .iter()
            .filter_map(|b| idx(b.player).map(|i| (i, *b)))
            .filter(|(i, b)| {
                let p = &self.g.players[*i];
                match b.currency {
                    Currency::Coins => p.coins >= b.amount,
                    Currency::Influence => p.influence >= b.amount,
                }
            })
            .max_by_key(|(i, b)| {
                (
                    b.value(),
                    self.g.players[*i].effective_stability(),
                    std::cmp::Reverse(b.seq),
                )
            });
        let payload = match winner {
            Some((i, b)) => {
                match b.currency {
                    Currency::Coins => {
                        self.money(i, -b.amount, MoneyRule::ArenaBid);
                    }
                    Currency::Influence => self.add_influence(i, -b.amount),
                }
                self.apply_effect(i, prize.effect(), MoneyRule::ArenaPrize);
                let p = &self.g.players[i];
                let text = format!(
                    "🏆 {} wins {} with {} ({}): {}.",
                    p.handle(),
                    prize.title(),
                    text::amount(b.amount, b.currency),
                    text::count(bids.len(), "bid", "bids"),
                    prize.effect().describe()
                );
                let payload = json!({"round": round, "prize": prize, "winner": p.id, "amount": b.amount,
                       "currency": b.currency, "value": b.value(), "bids": bids.len()});
                self.say(text);
                payload
            }
            None => {
                self.say(format!("🏟 Nobody won {}.", prize.title()));
                json!({"round": round, "prize": prize, "winner": null, "bids": bids.len()})
            }
        };
        self.emit(ARENA_RESOLVED, self.key(&format!("r{round}")), payload);
    }

    /// Applies every order in [`RESOLVE_ORDER`], posts the round report.
    pub(super) fn resolve_round(&mut self) {
        let round = self.g.round;
        let submitted = std::mem::take(&mut self.g.orders);
        let sat_out: Vec<bool> = self.g.players.iter().map(|p| p.fallen).collect();
        let mut valid: Vec<Order> = Vec::new();
        let mut shielded: HashSet<PlayerId> = HashSet::new();
        let mut report: Vec<String> = Vec::new();
        let mut fine = None;
        let mut fallen = Vec::new();
        for step in RESOLVE_ORDER {
            match step {
                Step::PayCosts => {
                    for o in &submitted {
                        let Some(i) = self.index(o.player) else {
                            continue;
                        };
                        if self.g.players[i].coins >= o.kind.cost() {
                            self.money(i, -o.kind.cost(), MoneyRule::OrderCost);
                            valid.push(*o);
                        } else {
                            let c = &self.g.players[i].country;
                            report.push(format!("❌ {c}: {} void, unpaid.", o.kind.title()));
                        }
                    }
                }
                Step::Orders(kind) => {
                    let mut these: Vec<Order> = valid.iter().filter(|o| o.kind == kind).copied().collect();
                    these.sort_by_key(|o| self.index(o.player));
                    for o in these {
                        if let Some(line) = self.apply_order(o, &valid, &mut shielded) {
                            report.push(line);
                        }
                    }
                }
                Step::AntiMonopoly => {
                    fine = self.anti_monopoly(&mut report);
                }
                Step::Caretakers => {
                    for (i, &sat) in sat_out.iter().enumerate() {
                        if sat {
                            let p = &mut self.g.players[i];
                            p.fallen = false;
                            p.stability = p.stability.max(CARETAKER_STABILITY);
                            report.push(format!(
                                "🏛 {}: a caretaker government takes over (stability {}).",
                                p.country, p.stability
                            ));
                        }
                    }
                }
                Step::Falls => {
                    for p in &mut self.g.players {
                        if p.stability == 0 {
                            p.fallen = true;
                            fallen.push(p.id);
                            report.push(format!(
                                "💥 The government of {} falls! It sits out the next orders.",
                                p.country
                            ));
                        }
                    }
                }
            }
        }
        if report.is_empty() {
            report.push("A quiet round: no decrees.".to_owned());
        }
        let countries: Vec<_> = self
            .g
            .players
            .iter()
            .map(|p| {
                json!({"player_id": p.id, "coins": p.coins, "economy": p.economy,
                            "stability": p.stability, "influence": p.influence, "fallen": p.fallen})
            })
            .collect();
        self.emit(
            ROUND_RESOLVED,
            self.key(&format!("r{round}")),
            json!({"round": round, "orders": valid, "fine": fine, "fallen": fallen, "countries": countries}),
        );
        self.say(format!(
            "📊 Round {round} resolved:\n{}\n\n{}",
            report.join("\n"),
            text::table(&self.g)
        ));
        for i in 0..self.g.players.len() {
            let t = text::figures(&self.g.players[i]);
            self.tell(i, format!("📊 After round {round}: {t}"));
        }
    }

    fn index(&self, id: PlayerId) -> Option<usize> {
        self.g.players.iter().position(|p| p.id == id)
    }

    /// One order's effect and its report line.
    fn apply_order(&mut self, o: Order, valid: &[Order], shielded: &mut HashSet<PlayerId>) -> Option<String> {
        let i = self.index(o.player)?;
        let j = o.target.and_then(|t| self.index(t));
        let me = self.g.players[i].country.clone();
        let them = j.map_or(String::new(), |j| self.g.players[j].country.clone());
        Some(match (o.kind, j) {
            (OrderKind::Security, _) => {
                shielded.insert(o.player);
                self.add_stability(i, SECURITY_STABILITY);
                format!("🛡 {me}: Security ({} stability).", signed(SECURITY_STABILITY))
            }
            (OrderKind::Propaganda, _) => {
                self.add_stability(i, PROPAGANDA_STABILITY);
                self.add_influence(i, PROPAGANDA_INFLUENCE);
                format!(
                    "📣 {me}: Propaganda ({} stability).",
                    signed(PROPAGANDA_STABILITY)
                )
            }
            (OrderKind::Diplomacy, _) => {
                self.add_influence(i, DIPLOMACY_INFLUENCE);
                self.add_stability(i, DIPLOMACY_STABILITY);
                format!("🕊 {me}: Diplomacy ({} stability).", signed(DIPLOMACY_STABILITY))
            }
            (OrderKind::Invest, _) => {
                self.add_economy(i, INVEST_ECONOMY);
                format!("🏗 {me}: Invest (economy {}).", self.g.players[i].economy)
            }
            (OrderKind::Stimulus, _) => {
                self.money(i, STIMULUS_COINS, MoneyRule::Stimulus);
                self.add_stability(i, STIMULUS_STABILITY);
                format!(
                    "🖨 {me}: Stimulus ({} coins, {} stability).",
                    signed(STIMULUS_COINS),
                    signed(STIMULUS_STABILITY)
                )
            }
            (OrderKind::TradePact, Some(j)) => {
                let mutual = valid.iter().any(|q| {
                    q.kind == OrderKind::TradePact
                        && q.player == self.g.players[j].id
                        && q.target == Some(o.player)
                });
                if !mutual {
                    return Some(format!(
                        "📭 {me} offered {them} a trade pact; it was not returned."
                    ));
                }
                self.money(i, TRADE_PACT_COINS, MoneyRule::TradePact);
                // Both sides order the pact; the lower seat reports it once.
                if self.g.players[i].seat > self.g.players[j].seat {
                    return None;
                }
                format!(
                    "🤝 {me} and {them} seal a trade pact: {} coins each.",
                    signed(TRADE_PACT_COINS)
                )
            }
            (OrderKind::Sanctions, Some(j)) => {
                let halved = shielded.contains(&self.g.players[j].id);
                let div = if halved { 2 } else { 1 };
                let lost = -self.money(j, -SANCTIONS_COINS / div, MoneyRule::Sanctions);
                let seized = self.money(i, lost * SANCTIONS_SEIZED_PERCENT / 100, MoneyRule::Sanctions);
                self.add_stability(j, -SANCTIONS_STABILITY / div);
                format!(
                    "🚫 {me} sanctions {them}: {} coins ({me} seizes {seized}), {} stability{}.",
                    signed(-lost),
                    signed(-SANCTIONS_STABILITY / div),
                    if halved { " (halved by Security)" } else { "" }
                )
            }
            (OrderKind::Espionage, Some(j)) => {
                if shielded.contains(&self.g.players[j].id) {
                    self.add_stability(i, -ESPIONAGE_CAUGHT_STABILITY);
                    self.tell(j, format!("🕵 Your Security caught a spy from {me}."));
                    format!(
                        "🕵 A spy from {me} is caught in {them}: {} stability for {me}.",
                        signed(-ESPIONAGE_CAUGHT_STABILITY)
                    )
                } else {
                    let coins = self.g.players[j].coins;
                    let steal = (coins * ESPIONAGE_PERCENT / 100)
                        .clamp(ESPIONAGE_MIN, ESPIONAGE_MAX)
                        .min(coins);
                    self.money(j, -steal, MoneyRule::Espionage);
                    self.money(i, steal, MoneyRule::Espionage);
                    let target = &self.g.players[j];
                    let their_orders: Vec<String> = valid
                        .iter()
                        .filter(|q| q.player == target.id)
                        .map(|q| text::order_label(&self.g, q))
                        .collect();
                    let dossier = format!(
                        "🕵 Dossier on {}: {}\nTheir orders this round: {}.",
                        target.name,
                        text::figures(target),
                        if their_orders.is_empty() {
                            "none".to_owned()
                        } else {
                            their_orders.join(", ")
                        }
                    );
                    self.tell(i, dossier);
                    format!("🕵 {me}'s spies steal {steal} coins from {them}.")
                }
            }
            // Submission guarantees targeted orders a target, and players never leave.
            (OrderKind::TradePact | OrderKind::Sanctions | OrderKind::Espionage, None) => {
                return None;
            }
        })
    }

    /// A country holding more than half of all coins pays a fine shared by the others.
    fn anti_monopoly(&mut self, report: &mut Vec<String>) -> Option<serde_json::Value> {
        let total = self.g.total_coins();
        let i = self.g.players.iter().position(|p| p.coins * 2 > total)?;
        let coins = self.g.players[i].coins;
        let excess = coins - total / 2;
        let fine = (excess * FINE_PERCENT_OF_EXCESS + 99) / 100;
        self.money(i, -fine, MoneyRule::AntiMonopolyFine);
        let others = (self.g.players.len() - 1).max(1) as i64;
        let share = fine / others;
        for j in 0..self.g.players.len() {
            if j != i {
                self.money(j, share, MoneyRule::AntiMonopolyShare);
            }
        }
        let p = &self.g.players[i];
        report.push(format!(
            "⚖️ Anti-monopoly: {} held {}% of the world's coins and is fined {fine}; {share} to every other country.",
            p.country,
            coins * 100 / total
        ));
        Some(json!({"player_id": p.id, "fine": fine, "share": share}))
    }
}
