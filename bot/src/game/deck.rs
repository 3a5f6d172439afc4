//! World event cards, World Arena prizes, and the seeded shuffle that orders them.
//!
//! Card and prize effects are data: the engine applies them and `/rules` prints them from the
//! same definitions.

use serde::{Deserialize, Serialize};

/// splitmix64. Written out here because its output is fixed forever, whereas a library RNG may
/// change its algorithm between versions and silently break the replay of stored games.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher-Yates. The modulo bias is below 2^-59 for lists this short.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// The event deck and the prize list of a new game, both from one seed.
pub fn shuffled(seed: u64) -> (Vec<EventCard>, Vec<Prize>) {
    let mut rng = SplitMix64::new(seed);
    let mut deck = EventCard::ALL.to_vec();
    rng.shuffle(&mut deck);
    let mut prizes = Prize::ALL.to_vec();
    rng.shuffle(&mut prizes);
    (deck, prizes)
}

/// Changes to one country. Coins never go below zero; the other figures are clamped to their
/// ranges (see `rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    pub coins: i64,
    /// A share of the treasury, in percent (negative: lost).
    pub coins_percent: i64,
    pub economy: i64,
    pub stability: i64,
    pub influence: i64,
}

impl Effect {
    pub const NONE: Effect = Effect {
        coins: 0,
        coins_percent: 0,
        economy: 0,
        stability: 0,
        influence: 0,
    };

    pub fn describe(&self) -> String {
        let parts = [
            (self.coins, " coins"),
            (self.coins_percent, "% of its coins"),
            (self.economy, " economy"),
            (self.stability, " stability"),
            (self.influence, " influence"),
        ];
        parts
            .iter()
            .filter(|(n, _)| *n != 0)
            .map(|(n, unit)| format!("{}{unit}", signed(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// "+5" / "−5", with a real minus sign for the chat.
pub fn signed(n: i64) -> String {
    if n < 0 {
        format!("−{}", -n)
    } else {
        format!("+{n}")
    }
}

/// Which countries a card hits. Ties for richest or poorest hit every tied country; the
/// stability conditions use effective stability, so a fallen government never qualifies for
/// "stability N+".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    All,
    EconomyAtLeast(i64),
    StabilityAtLeast(i64),
    StabilityBelow(i64),
    Richest,
    Poorest,
    Chair,
}

impl Who {
    pub fn describe(self) -> String {
        match self {
            Who::All => "every country".into(),
            Who::EconomyAtLeast(n) => format!("countries with economy {n}+"),
            Who::StabilityAtLeast(n) => format!("countries with stability {n}+"),
            Who::StabilityBelow(n) => format!("countries with stability below {n}"),
            Who::Richest => "the richest country".into(),
            Who::Poorest => "the poorest country".into(),
            Who::Chair => "the chair's country".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardRule {
    pub who: Who,
    pub effect: Effect,
}

const fn rule(who: Who, effect: Effect) -> CardRule {
    CardRule { who, effect }
}

/// World event cards: one is drawn in the event phase of every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventCard {
    OilCrisis,
    TechBoom,
    Pandemic,
    TradeSummit,
    MarketCrash,
    BumperHarvest,
    Cyberattack,
    ForeignAid,
    GlobalRecession,
    GoldRush,
    CouncilScandal,
    MassProtests,
    PeaceDividend,
    BrainDrain,
}

impl EventCard {
    pub const ALL: [EventCard; 14] = [
        EventCard::OilCrisis,
        EventCard::TechBoom,
        EventCard::Pandemic,
        EventCard::TradeSummit,
        EventCard::MarketCrash,
        EventCard::BumperHarvest,
        EventCard::Cyberattack,
        EventCard::ForeignAid,
        EventCard::GlobalRecession,
        EventCard::GoldRush,
        EventCard::CouncilScandal,
        EventCard::MassProtests,
        EventCard::PeaceDividend,
        EventCard::BrainDrain,
    ];

    pub fn title(self) -> &'static str {
        match self {
            EventCard::OilCrisis => "Oil crisis",
            EventCard::TechBoom => "Tech boom",
            EventCard::Pandemic => "Pandemic",
            EventCard::TradeSummit => "Trade summit",
            EventCard::MarketCrash => "Market crash",
            EventCard::BumperHarvest => "Bumper harvest",
            EventCard::Cyberattack => "Cyberattack",
            EventCard::ForeignAid => "Foreign aid",
            EventCard::GlobalRecession => "Global recession",
            EventCard::GoldRush => "Gold rush",
            EventCard::CouncilScandal => "Scandal at the Council",
            EventCard::MassProtests => "Mass protests",
            EventCard::PeaceDividend => "Peace dividend",
            EventCard::BrainDrain => "Brain drain",
        }
    }

    pub fn flavor(self) -> &'static str {
        match self {
            EventCard::OilCrisis => "Tankers idle at sea and the pumps run dry.",
            EventCard::TechBoom => "Start-ups bloom wherever the streets are calm.",
            EventCard::Pandemic => "Hospitals fill up; trade and tempers suffer.",
            EventCard::TradeSummit => "Handshakes, photo-ops and a few real deals.",
            EventCard::MarketCrash => "The world's markets lose a fifth of their value overnight.",
            EventCard::BumperHarvest => "Full granaries, cheap bread, happy citizens.",
            EventCard::Cyberattack => "Hackers go where the money is.",
            EventCard::ForeignAid => "The donor conference helps whoever needs it most.",
            EventCard::GlobalRecession => "Big economies catch the worst cold.",
            EventCard::GoldRush => "Prospectors strike gold on every continent.",
            EventCard::CouncilScandal => "Leaked messages embarrass the chair of the Council.",
            EventCard::MassProtests => "Unrest spreads where governments were already shaky.",
            EventCard::PeaceDividend => "Stable countries cut defence budgets and cash in.",
            EventCard::BrainDrain => "Talent leaves the richest country for the poorest.",
        }
    }

    pub fn rules(self) -> &'static [CardRule] {
        const E: Effect = Effect::NONE;
        match self {
            EventCard::OilCrisis => {
                const {
                    &[
                        rule(Who::All, Effect { stability: -10, ..E }),
                        rule(Who::EconomyAtLeast(5), Effect { coins: -15, ..E }),
                    ]
                }
            }
            EventCard::TechBoom => const { &[rule(Who::StabilityAtLeast(50), Effect { economy: 1, ..E })] },
            EventCard::Pandemic => {
                const {
                    &[rule(
                        Who::All,
                        Effect {
                            coins: -10,
                            stability: -15,
                            ..E
                        },
                    )]
                }
            }
            EventCard::TradeSummit => {
                const {
                    &[rule(
                        Who::All,
                        Effect {
                            coins: 10,
                            influence: 2,
                            ..E
                        },
                    )]
                }
            }
            EventCard::MarketCrash => {
                const {
                    &[rule(
                        Who::All,
                        Effect {
                            coins_percent: -20,
                            ..E
                        },
                    )]
                }
            }
            EventCard::BumperHarvest => const { &[rule(Who::All, Effect { stability: 10, ..E })] },
            EventCard::Cyberattack => {
                const {
                    &[rule(
                        Who::Richest,
                        Effect {
                            coins: -25,
                            stability: -5,
                            ..E
                        },
                    )]
                }
            }
            EventCard::ForeignAid => const { &[rule(Who::Poorest, Effect { coins: 40, ..E })] },
            EventCard::GlobalRecession => {
                const {
                    &[
                        rule(Who::EconomyAtLeast(5), Effect { economy: -1, ..E }),
                        rule(Who::All, Effect { stability: -5, ..E }),
                    ]
                }
            }
            EventCard::GoldRush => const { &[rule(Who::All, Effect { coins: 15, ..E })] },
            EventCard::CouncilScandal => const { &[rule(Who::Chair, Effect { stability: -20, ..E })] },
            EventCard::MassProtests => {
                const {
                    &[rule(
                        Who::StabilityBelow(50),
                        Effect {
                            coins: -10,
                            stability: -10,
                            ..E
                        },
                    )]
                }
            }
            EventCard::PeaceDividend => {
                const { &[rule(Who::StabilityAtLeast(70), Effect { coins: 20, ..E })] }
            }
            EventCard::BrainDrain => {
                const {
                    &[
                        rule(Who::Richest, Effect { economy: -1, ..E }),
                        rule(Who::Poorest, Effect { economy: 1, ..E }),
                    ]
                }
            }
        }
    }

    /// "every country: −10 stability; countries with economy 5+: −15 coins".
    pub fn describe(self) -> String {
        self.rules()
            .iter()
            .map(|r| format!("{}: {}", r.who.describe(), r.effect.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The contested prize of the World Arena; the winner alone gets its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prize {
    WorldSummit,
    RareEarthField,
    OilConcession,
    OlympicGames,
    Spaceport,
    CouncilSeat,
    GoldReserve,
    MediaEmpire,
}

impl Prize {
    pub const ALL: [Prize; 8] = [
        Prize::WorldSummit,
        Prize::RareEarthField,
        Prize::OilConcession,
        Prize::OlympicGames,
        Prize::Spaceport,
        Prize::CouncilSeat,
        Prize::GoldReserve,
        Prize::MediaEmpire,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Prize::WorldSummit => "Host the World Summit",
            Prize::RareEarthField => "Rare-earth field",
            Prize::OilConcession => "Arctic oil concession",
            Prize::OlympicGames => "Olympic Games",
            Prize::Spaceport => "Equatorial spaceport",
            Prize::CouncilSeat => "Permanent Council seat",
            Prize::GoldReserve => "Sunken gold reserve",
            Prize::MediaEmpire => "Global media empire",
        }
    }

    pub fn effect(self) -> Effect {
        const E: Effect = Effect::NONE;
        match self {
            Prize::WorldSummit => Effect {
                stability: 15,
                influence: 2,
                ..E
            },
            Prize::RareEarthField => Effect { economy: 1, ..E },
            Prize::OilConcession => Effect { coins: 45, ..E },
            Prize::OlympicGames => Effect {
                coins: 20,
                stability: 10,
                ..E
            },
            Prize::Spaceport => Effect {
                economy: 1,
                influence: 1,
                ..E
            },
            Prize::CouncilSeat => Effect { influence: 4, ..E },
            Prize::GoldReserve => Effect { coins: 35, ..E },
            Prize::MediaEmpire => Effect { stability: 20, ..E },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference outputs for seed 0 (Vigna's splitmix64.c); pinned so replays never drift.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn the_same_seed_gives_the_same_deck_and_different_seeds_differ() {
        assert_eq!(shuffled(42), shuffled(42));
        let decks: std::collections::HashSet<_> = (0..20).map(|s| shuffled(s).0).collect();
        assert!(decks.len() > 15, "seeds barely change the deck");
    }

    #[test]
    fn a_shuffle_is_a_permutation() {
        let (mut deck, mut prizes) = shuffled(7);
        deck.sort_by_key(|c| EventCard::ALL.iter().position(|x| x == c));
        prizes.sort_by_key(|p| Prize::ALL.iter().position(|x| x == p));
        assert_eq!(deck, EventCard::ALL);
        assert_eq!(prizes, Prize::ALL);
    }

    #[test]
    fn there_are_at_least_ten_cards_and_every_card_does_something() {
        assert!(EventCard::ALL.len() >= 10);
        for card in EventCard::ALL {
            assert!(!card.rules().is_empty(), "{card:?}");
            assert!(!card.describe().is_empty(), "{card:?}");
        }
        for prize in Prize::ALL {
            assert_ne!(prize.effect(), Effect::NONE, "{prize:?}");
        }
    }

    #[test]
    fn effects_read_well() {
        assert_eq!(
            EventCard::OilCrisis.describe(),
            "every country: −10 stability; countries with economy 5+: −15 coins"
        );
        assert_eq!(
            EventCard::MarketCrash.describe(),
            "every country: −20% of its coins"
        );
    }
}
