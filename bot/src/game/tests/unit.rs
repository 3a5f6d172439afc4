use serde_json::json;

use super::*;
use crate::game::deck::{EventCard, Prize};
use crate::game::rules::*;
use crate::game::state::Bid;

/// Every round draws a card that touches no coins, so money checks stay exact.
fn calm(g: &mut Game) {
    g.deck = vec![EventCard::GlobalRecession; g.deck.len()];
}

fn in_phase(players: i64, phase: Phase) -> Game {
    let mut g = lobby(players);
    calm(&mut g);
    ok(&mut g, 1, Command::BeginRound);
    force_to(&mut g, phase);
    g
}

// ---- lobby --------------------------------------------------------------------------------

#[test]
fn start_game_opens_a_lobby_chaired_by_its_creator() {
    let out = apply(None, &actor(1), start_cmd(7, None)).unwrap();
    let g = &out.state;
    assert_eq!(g.phase, Phase::Lobby);
    assert_eq!((g.round, g.chair, g.settings.rounds), (0, 1, DEFAULT_ROUNDS));
    assert_eq!(g.players.len(), 1);
    assert_eq!(g.players[0].country, COUNTRIES[0]);
    assert_eq!(g.players[0].coins, START_COINS);
    assert_eq!(event_types(&out), ["game.created", "player.joined"]);
    let keys: Vec<_> = out.events.iter().map(|e| e.idempotency_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("{GAME_ID}:game.created"),
            format!("{GAME_ID}:p1:player.joined")
        ]
    );
    for e in &out.events {
        assert_eq!(e.aggregate_type, "game");
        assert_eq!(e.aggregate_id, GAME_ID.to_string());
    }
    assert_eq!(out.events[0].payload["chat_id"], json!(CHAT_ID));
    assert!(out.public[0].contains("/joingame"));
}

#[test]
fn one_open_game_per_chat_and_a_new_one_after_the_end() {
    let mut g = lobby(2);
    let r = refused(&g, 2, start_cmd(1, None));
    assert_eq!(r, Refusal::GameAlreadyOpen(Phase::Lobby));
    ok(&mut g, 1, Command::EndGame);
    let fresh = apply(
        Some(&g),
        &actor(2),
        Command::StartGame {
            game_id: Uuid::from_u128(2),
            chat_id: CHAT_ID,
            seed: 1,
            rounds: Some(3),
        },
    )
    .unwrap()
    .state;
    assert_eq!(
        (fresh.chair, fresh.phase, fresh.settings.rounds),
        (2, Phase::Lobby, 3)
    );
}

#[test]
fn without_a_game_everything_but_start_is_refused() {
    for cmd in [
        Command::JoinGame,
        Command::Status,
        Command::Ready,
        Command::EndGame,
    ] {
        assert_eq!(apply(None, &actor(1), cmd), Err(Refusal::NoGame));
    }
    assert_eq!(
        Refusal::NoGame.to_string(),
        "No game in this chat. Start one with /startgame."
    );
}

#[test]
fn rounds_must_be_in_range() {
    for bad in [0, MAX_ROUNDS + 1] {
        let r = apply(None, &actor(1), start_cmd(1, Some(bad))).unwrap_err();
        assert!(matches!(r, Refusal::InvalidRounds { got, .. } if got == bad.to_string()));
    }
    assert!(apply(None, &actor(1), start_cmd(1, Some(MAX_ROUNDS))).is_ok());
}

#[test]
fn joining_fills_seats_up_to_eight_and_only_in_the_lobby() {
    let mut g = lobby(7);
    let out = ok(&mut g, 8, Command::JoinGame);
    assert_eq!(event_types(&out), ["player.joined"]);
    assert_eq!(g.player(8).unwrap().country, COUNTRIES[7]);
    assert_eq!(refused(&g, 9, Command::JoinGame), Refusal::GameFull { max: 8 });
    assert_eq!(refused(&g, 3, Command::JoinGame), Refusal::AlreadyJoined);
    ok(&mut g, 1, Command::BeginRound);
    assert_eq!(
        refused(&g, 9, Command::JoinGame).to_string(),
        "Players can only join in the lobby phase; now: world arena"
    );
}

#[test]
fn begin_round_needs_the_chair_and_two_players() {
    let mut g = lobby(1);
    assert_eq!(
        refused(&g, 1, Command::BeginRound),
        Refusal::NotEnoughPlayers { have: 1, need: 2 }
    );
    ok(&mut g, 2, Command::JoinGame);
    assert_eq!(refused(&g, 2, Command::BeginRound), Refusal::NotChair);
    assert_eq!(refused(&g, 9, Command::BeginRound), Refusal::NotAPlayer);
    assert_eq!(refused(&g, 1, Command::Ready), Refusal::NothingToBeReadyFor);
    ok(&mut g, 1, Command::BeginRound);
    assert!(matches!(
        refused(&g, 1, Command::BeginRound),
        Refusal::WrongPhase {
            allowed: Phase::Lobby,
            ..
        }
    ));
}

// ---- income, event, phases ----------------------------------------------------------------

#[test]
fn begin_round_runs_income_and_the_event_and_stops_at_the_arena() {
    let mut g = lobby(3);
    g.deck[0] = EventCard::GoldRush;
    let out = ok(&mut g, 1, Command::BeginRound);
    assert_eq!((g.round, g.phase), (1, Phase::WorldArena));
    assert_eq!(
        event_types(&out),
        [
            "phase.changed",
            "round.started",
            "phase.changed",
            "card.drawn",
            "phase.changed"
        ]
    );
    let path: Vec<_> = out
        .events
        .iter()
        .filter(|e| e.event_type == "phase.changed")
        .map(|e| (e.payload["from"].clone(), e.payload["to"].clone()))
        .collect();
    assert_eq!(
        path,
        [
            (json!("lobby"), json!("income")),
            (json!("income"), json!("event")),
            (json!("event"), json!("world_arena"))
        ]
    );
    let net = START_ECONOMY * INCOME_PER_ECONOMY - UPKEEP + 15;
    assert_eq!(coins(&g, 1), START_COINS + net + CHAIR_SALARY);
    assert_eq!(coins(&g, 2), START_COINS + net);
    assert_eq!(
        g.player(2).unwrap().influence,
        START_INFLUENCE + INFLUENCE_PER_ROUND
    );
    // Each player learns their own figures privately.
    for id in 1..=3 {
        assert!(
            out.private
                .iter()
                .any(|m| m.to == id && m.text.contains("income"))
        );
    }
    assert!(out.public.iter().any(|t| t.contains("Gold rush")));
    assert_eq!(g.current_event(), Some(EventCard::GoldRush));
}

#[test]
fn stable_governments_earn_a_bonus_and_fallen_ones_do_not() {
    let mut g = lobby(3);
    calm(&mut g);
    player_mut(&mut g, 2).stability = STABLE_AT;
    player_mut(&mut g, 3).stability = STABLE_AT;
    player_mut(&mut g, 3).fallen = true;
    let out = ok(&mut g, 1, Command::BeginRound);
    let bonus: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| m.rule == MoneyRule::StabilityBonus)
        .map(|m| (m.player, m.delta))
        .collect();
    assert_eq!(bonus, [(2, STABILITY_BONUS)]);
}

#[test]
fn when_everyone_is_ready_the_phase_advances_by_itself() {
    let mut g = in_phase(3, Phase::WorldArena);
    let out = ok(&mut g, 2, Command::Ready);
    assert_eq!(event_types(&out), ["player.ready"]);
    assert!(out.public[0].contains("waiting for Alice, Carol"));
    assert_eq!(refused(&g, 2, Command::Ready), Refusal::AlreadyReady);
    ok(&mut g, 1, Command::Ready);
    let out = ok(&mut g, 3, Command::Ready);
    assert_eq!(g.phase, Phase::Negotiations);
    assert!(event_types(&out).contains(&"arena.resolved"));
    assert!(g.players.iter().all(|p| !p.ready), "ready resets");
    assert_eq!(
        out.events.last().unwrap().idempotency_key,
        format!("{GAME_ID}:r1:negotiations:phase.changed")
    );
}

#[test]
fn the_chair_moves_on_only_with_a_majority_ready() {
    let mut g = in_phase(3, Phase::Negotiations);
    assert_eq!(refused(&g, 2, Command::NextPhase), Refusal::NotChair);
    // Alone, the chair cannot cut the others off.
    assert_eq!(
        refused(&g, 1, Command::NextPhase),
        Refusal::NextPhaseNeedsMajority {
            ready: 1,
            players: 3,
            need: 2
        }
    );
    ok(&mut g, 3, Command::Ready);
    let out = ok(&mut g, 1, Command::NextPhase);
    assert_eq!(g.phase, Phase::Orders);
    assert!(out.public[0].contains("passive: Bob."), "{}", out.public[0]);
    assert_eq!(out.events[0].payload["forced_by"], json!(1));
}

#[test]
fn a_deadline_ends_its_phase_once_and_only_its_phase() {
    let mut g = in_phase(3, Phase::WorldArena);
    ok(&mut g, 2, Command::Ready);
    let stale = Command::Deadline {
        round: g.round,
        phase: g.phase,
    };
    let out = deadline(&mut g);
    assert_eq!(g.phase, Phase::Negotiations);
    assert!(
        out.public[0].contains("passive: Alice, Carol."),
        "{}",
        out.public[0]
    );
    assert_eq!(out.events[0].payload["forced_by"], json!(null));
    // A repeated or late deadline of the ended phase changes nothing.
    assert_eq!(refused(&g, 0, stale), Refusal::StaleDeadline);
    let lobby = lobby(2);
    let early = Command::Deadline {
        round: 0,
        phase: Phase::Lobby,
    };
    assert_eq!(refused(&lobby, 0, early), Refusal::StaleDeadline);
}

#[test]
fn wrong_phase_refusals_name_both_phases() {
    let g = in_phase(2, Phase::Negotiations);
    assert_eq!(
        refused(&g, 1, order(OrderKind::Invest, None)).to_string(),
        "Orders can only be given in the orders phase; now: negotiations"
    );
    assert_eq!(
        refused(
            &g,
            1,
            Command::Bid {
                amount: 5,
                currency: Currency::Coins
            }
        )
        .to_string(),
        "Bids can only be placed in the world arena phase; now: negotiations"
    );
    let g = in_phase(2, Phase::Orders);
    assert_eq!(
        refused(
            &g,
            1,
            Command::Give {
                to: "bob".into(),
                amount: 5
            }
        )
        .to_string(),
        "Coins can only be given in the negotiations phase; now: orders"
    );
}

// ---- negotiations -------------------------------------------------------------------------

#[test]
fn give_moves_coins_between_players() {
    let mut g = in_phase(3, Phase::Negotiations);
    let (a, b) = (coins(&g, 1), coins(&g, 2));
    let out = ok(
        &mut g,
        1,
        Command::Give {
            to: "@Bob".into(),
            amount: 20,
        },
    );
    assert_eq!((coins(&g, 1), coins(&g, 2)), (a - 20, b + 20));
    assert_eq!(event_types(&out), ["coins.transferred"]);
    assert_eq!(
        out.events[0].payload,
        json!({"from": 1, "to": 2, "amount": 20, "round": 1})
    );
    assert!(out.public[0].contains("sent 20 coins"));
    assert_eq!(out.private.len(), 2);
    // By country, by name, by id.
    ok(
        &mut g,
        1,
        Command::Give {
            to: "sudmark".into(),
            amount: 1,
        },
    );
    ok(
        &mut g,
        1,
        Command::Give {
            to: "Carol".into(),
            amount: 1,
        },
    );
    ok(
        &mut g,
        1,
        Command::Give {
            to: "3".into(),
            amount: 1,
        },
    );
}

#[test]
fn two_equal_gives_are_two_events_and_a_retry_repeats_its_key() {
    let mut g = in_phase(2, Phase::Negotiations);
    let give = Command::Give {
        to: "bob".into(),
        amount: 5,
    };
    let before = g.clone();
    let actions = g.player(1).unwrap().actions;
    let first = ok(&mut g, 1, give.clone());
    let retry = apply(Some(&before), &actor(1), give.clone()).unwrap();
    assert_eq!(
        first, retry,
        "the same command on the same state is the same outcome"
    );
    let second = ok(&mut g, 1, give);
    assert_ne!(first.events[0].idempotency_key, second.events[0].idempotency_key);
    assert_eq!(
        first.events[0].idempotency_key,
        format!("{GAME_ID}:r1:negotiations:p1:give:2:5:a{actions}:coins.transferred")
    );
}

#[test]
fn bad_gives_are_refused() {
    let g = in_phase(3, Phase::Negotiations);
    let give = |to: &str, amount| Command::Give {
        to: to.into(),
        amount,
    };
    assert_eq!(refused(&g, 1, give("bob", 0)), Refusal::NonPositiveAmount(0));
    assert_eq!(refused(&g, 1, give("bob", -5)), Refusal::NonPositiveAmount(-5));
    let have = coins(&g, 1);
    assert_eq!(
        refused(&g, 1, give("bob", have + 1)),
        Refusal::InsufficientFunds {
            what: "coins",
            need: have + 1,
            have
        }
    );
    assert_eq!(
        refused(&g, 1, give("@zed", 5)).to_string(),
        "No player “@zed” in this game."
    );
    assert_eq!(refused(&g, 1, give("@alice", 5)), Refusal::TargetIsSelf);
    assert_eq!(refused(&g, 1, give("", 5)), Refusal::UnknownTarget(String::new()));
    assert_eq!(refused(&g, 9, give("bob", 5)), Refusal::NotAPlayer);
}

#[test]
fn a_name_shared_by_two_players_is_ambiguous() {
    let mut g = lobby(2);
    for id in [3, 4] {
        let sam = Actor {
            id,
            name: "Sam".into(),
            username: None,
        };
        g = apply(Some(&g), &sam, Command::JoinGame).unwrap().state;
    }
    calm(&mut g);
    ok(&mut g, 1, Command::BeginRound);
    force_to(&mut g, Phase::Negotiations);
    let r = refused(
        &g,
        1,
        Command::Give {
            to: "sam".into(),
            amount: 1,
        },
    );
    assert_eq!(r, Refusal::AmbiguousTarget("sam".into()));
    ok(
        &mut g,
        1,
        Command::Give {
            to: "4".into(),
            amount: 1,
        },
    );
}

// ---- world arena --------------------------------------------------------------------------

fn arena(players: i64, prize: Prize) -> Game {
    let mut g = lobby(players);
    calm(&mut g);
    g.prizes = vec![prize; g.prizes.len()];
    ok(&mut g, 1, Command::BeginRound);
    g
}

fn bid(amount: i64, currency: Currency) -> Command {
    Command::Bid { amount, currency }
}

#[test]
fn the_highest_bid_wins_and_only_the_winner_pays() {
    let mut g = arena(3, Prize::OilConcession);
    player_mut(&mut g, 2).influence = 10;
    let before = g.clone();
    ok(&mut g, 1, bid(20, Currency::Coins));
    // 5 influence is worth 25 coins.
    let out = ok(&mut g, 2, bid(5, Currency::Influence));
    assert!(out.public[0].contains("sealed bid") && !out.public[0].contains('5'));
    let out = deadline(&mut g);
    let bob = g.player(2).unwrap();
    let bob0 = before.player(2).unwrap();
    assert_eq!(bob.influence, bob0.influence - 5);
    assert_eq!(bob.coins, bob0.coins + 45);
    assert_eq!(coins(&g, 1), coins(&before, 1), "losers keep their bid");
    let ev = out
        .events
        .iter()
        .find(|e| e.event_type == "arena.resolved")
        .unwrap();
    assert_eq!(ev.payload["winner"], json!(2));
    assert_eq!(ev.payload["value"], json!(25));
    assert!(g.bids.is_empty());
}

#[test]
fn arena_ties_go_to_stability_then_to_the_earlier_bid() {
    let mut g = arena(3, Prize::CouncilSeat);
    player_mut(&mut g, 3).stability = 90;
    ok(&mut g, 2, bid(10, Currency::Coins));
    ok(&mut g, 3, bid(2, Currency::Influence));
    deadline(&mut g);
    assert_eq!(g.player(3).unwrap().influence, START_INFLUENCE + 1 - 2 + 4);

    let mut g = arena(3, Prize::CouncilSeat);
    ok(&mut g, 3, bid(10, Currency::Coins));
    ok(&mut g, 2, bid(10, Currency::Coins));
    let out = deadline(&mut g);
    let ev = out
        .events
        .iter()
        .find(|e| e.event_type == "arena.resolved")
        .unwrap();
    assert_eq!(ev.payload["winner"], json!(3));
}

#[test]
fn a_new_bid_replaces_the_old_one_and_bids_must_be_covered() {
    let mut g = arena(2, Prize::GoldReserve);
    ok(&mut g, 2, bid(30, Currency::Coins));
    let out = ok(&mut g, 2, bid(1, Currency::Coins));
    assert!(out.public[0].contains("changed"));
    assert_eq!(g.bids.len(), 1);
    assert_eq!(g.bids[0].amount, 1);
    let inf = g.player(2).unwrap().influence;
    assert_eq!(
        refused(&g, 2, bid(inf + 1, Currency::Influence)).to_string(),
        format!("Not enough influence: you need {}, you have {inf}.", inf + 1)
    );
    assert_eq!(
        refused(&g, 2, bid(0, Currency::Coins)),
        Refusal::NonPositiveAmount(0)
    );
}

#[test]
fn nobody_bidding_leaves_the_prize_unclaimed() {
    let mut g = arena(2, Prize::GoldReserve);
    let before = g.clone();
    let out = deadline(&mut g);
    assert!(out.public.iter().any(|t| t.contains("Nobody won")));
    assert_eq!(g.total_coins(), before.total_coins());
}

#[test]
fn a_bid_placed_directly_in_state_that_cannot_be_covered_is_void() {
    let mut g = arena(2, Prize::GoldReserve);
    g.bids.push(Bid {
        player: 2,
        amount: 10_000,
        currency: Currency::Coins,
        seq: 9,
    });
    ok(&mut g, 1, bid(1, Currency::Coins));
    let out = deadline(&mut g);
    let ev = out
        .events
        .iter()
        .find(|e| e.event_type == "arena.resolved")
        .unwrap();
    assert_eq!(ev.payload["winner"], json!(1));
}

// ---- orders -------------------------------------------------------------------------------

#[test]
fn orders_are_limited_distinct_targeted_and_affordable() {
    let mut g = in_phase(3, Phase::Orders);
    assert_eq!(
        refused(&g, 1, order(OrderKind::Sanctions, None)).to_string(),
        "Sanctions needs a target: /orders sanctions @player"
    );
    assert_eq!(
        refused(&g, 1, order(OrderKind::Invest, Some("bob"))),
        Refusal::TargetNotAllowed(OrderKind::Invest)
    );
    assert_eq!(
        refused(&g, 1, order(OrderKind::Espionage, Some("alice"))),
        Refusal::TargetIsSelf
    );
    let out = ok(&mut g, 1, order(OrderKind::Sanctions, Some("bob")));
    assert_eq!(event_types(&out), ["orders.submitted"]);
    assert!(!out.public[0].contains("Sanctions"), "decrees are secret");
    assert!(out.private[0].text.contains("Sanctions → Bob (Sudmark)"));
    assert_eq!(
        refused(&g, 1, order(OrderKind::Sanctions, Some("bob"))),
        Refusal::DuplicateOrder
    );
    ok(&mut g, 1, order(OrderKind::Sanctions, Some("carol")));
    assert_eq!(
        refused(&g, 1, order(OrderKind::Stimulus, None)),
        Refusal::TooManyOrders { max: MAX_ORDERS }
    );
    player_mut(&mut g, 2).coins = OrderKind::Invest.cost() + 5;
    ok(&mut g, 2, order(OrderKind::Invest, None));
    assert_eq!(
        refused(&g, 2, order(OrderKind::Propaganda, None)),
        Refusal::InsufficientFunds {
            what: "coins",
            need: OrderKind::Invest.cost() + OrderKind::Propaganda.cost(),
            have: OrderKind::Invest.cost() + 5
        }
    );
    assert_eq!(
        refused(&g, 9, order(OrderKind::Invest, None)),
        Refusal::NotAPlayer
    );
}

#[test]
fn withdrawn_orders_free_their_slots() {
    let mut g = in_phase(2, Phase::Orders);
    assert_eq!(refused(&g, 1, Command::ClearOrders), Refusal::NoOrders);
    ok(&mut g, 1, order(OrderKind::Invest, None));
    ok(&mut g, 1, order(OrderKind::Stimulus, None));
    let out = ok(&mut g, 1, Command::ClearOrders);
    assert_eq!(event_types(&out), ["orders.cleared"]);
    assert_eq!(g.orders_of(1).count(), 0);
    let again = ok(&mut g, 1, order(OrderKind::Invest, None));
    assert_eq!(again.events[0].payload["slot"], json!(1));
}

/// Submits the orders, resolves the round, returns the outcome of the resolve.
fn resolve_with(g: &mut Game, orders: &[(PlayerId, OrderKind, Option<&str>)]) -> Outcome {
    for (id, kind, target) in orders {
        ok(g, *id, order(*kind, *target));
    }
    deadline(g)
}

#[test]
fn own_orders_change_the_country() {
    let mut g = in_phase(3, Phase::Orders);
    let before = g.clone();
    let out = resolve_with(
        &mut g,
        &[
            (1, OrderKind::Invest, None),
            (1, OrderKind::Propaganda, None),
            (2, OrderKind::Stimulus, None),
            (2, OrderKind::Diplomacy, None),
            (3, OrderKind::Security, None),
        ],
    );
    let (a0, b0, c0) = (
        before.player(1).unwrap(),
        before.player(2).unwrap(),
        before.player(3).unwrap(),
    );
    // Read figures from the round report: the next round's income has run since.
    let report = out
        .events
        .iter()
        .find(|e| e.event_type == "round.resolved")
        .unwrap();
    let after = |id: i64, field: &str| {
        report.payload["countries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["player_id"] == json!(id))
            .unwrap()[field]
            .as_i64()
            .unwrap()
    };
    assert_eq!(after(1, "economy"), a0.economy + INVEST_ECONOMY);
    assert_eq!(after(1, "stability"), a0.stability + PROPAGANDA_STABILITY);
    assert_eq!(after(1, "influence"), a0.influence + PROPAGANDA_INFLUENCE);
    assert_eq!(
        after(1, "coins"),
        a0.coins - OrderKind::Invest.cost() - OrderKind::Propaganda.cost()
    );
    assert_eq!(
        after(2, "coins"),
        b0.coins + STIMULUS_COINS - OrderKind::Diplomacy.cost()
    );
    assert_eq!(
        after(2, "stability"),
        b0.stability + STIMULUS_STABILITY + DIPLOMACY_STABILITY
    );
    assert_eq!(after(2, "influence"), b0.influence + DIPLOMACY_INFLUENCE);
    assert_eq!(after(3, "stability"), c0.stability + SECURITY_STABILITY);
    let text = out
        .public
        .iter()
        .find(|t| t.contains("Round 1 resolved"))
        .unwrap();
    assert!(text.contains("Invest") && text.contains("Stimulus"), "{text}");
    assert_eq!(g.round, 2, "the next round has begun");
    assert!(g.orders.is_empty());
}

#[test]
fn a_trade_pact_pays_only_when_returned() {
    let mut g = in_phase(3, Phase::Orders);
    let out = resolve_with(
        &mut g,
        &[
            (1, OrderKind::TradePact, Some("bob")),
            (2, OrderKind::TradePact, Some("alice")),
            (3, OrderKind::TradePact, Some("alice")),
        ],
    );
    let pacts: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| m.rule == MoneyRule::TradePact)
        .map(|m| (m.player, m.delta))
        .collect();
    assert_eq!(pacts, [(1, TRADE_PACT_COINS), (2, TRADE_PACT_COINS)]);
    let text = out.public.iter().find(|t| t.contains("resolved")).unwrap();
    assert!(
        text.contains("seal a trade pact") && text.contains("not returned"),
        "{text}"
    );
}

#[test]
fn sanctions_hurt_and_security_halves_them() {
    let mut g = in_phase(3, Phase::Orders);
    let out = resolve_with(
        &mut g,
        &[
            (1, OrderKind::Sanctions, Some("bob")),
            (1, OrderKind::Sanctions, Some("carol")),
            (3, OrderKind::Security, None),
        ],
    );
    let hits: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| m.rule == MoneyRule::Sanctions)
        .map(|m| (m.player, m.delta))
        .collect();
    let (full, half) = (SANCTIONS_COINS, SANCTIONS_COINS / 2);
    let seized = |n| n * SANCTIONS_SEIZED_PERCENT / 100;
    assert_eq!(
        hits,
        [(2, -full), (1, seized(full)), (3, -half), (1, seized(half))]
    );
    let text = out.public.iter().find(|t| t.contains("resolved")).unwrap();
    assert!(text.contains("halved by Security"), "{text}");
}

#[test]
fn espionage_steals_and_reveals_unless_caught() {
    let mut g = in_phase(3, Phase::Orders);
    player_mut(&mut g, 2).coins = 200;
    let alice0 = g.player(1).unwrap().stability;
    let out = resolve_with(
        &mut g,
        &[
            (1, OrderKind::Espionage, Some("bob")),
            (2, OrderKind::Invest, None),
            (1, OrderKind::Espionage, Some("carol")),
            (3, OrderKind::Security, None),
        ],
    );
    let left = 200 - OrderKind::Invest.cost();
    let steal = (left * ESPIONAGE_PERCENT / 100).clamp(ESPIONAGE_MIN, ESPIONAGE_MAX);
    let stolen: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| m.rule == MoneyRule::Espionage)
        .map(|m| (m.player, m.delta))
        .collect();
    assert_eq!(stolen, [(2, -steal), (1, steal)]);
    let dossier = out
        .private
        .iter()
        .find(|m| m.to == 1 && m.text.contains("Dossier"))
        .unwrap();
    assert!(dossier.text.contains("Invest"), "{}", dossier.text);
    assert!(
        out.private
            .iter()
            .any(|m| m.to == 3 && m.text.contains("caught a spy"))
    );
    let report = out
        .events
        .iter()
        .find(|e| e.event_type == "round.resolved")
        .unwrap();
    let alice = &report.payload["countries"][0];
    assert_eq!(alice["stability"], json!(alice0 - ESPIONAGE_CAUGHT_STABILITY));
}

#[test]
fn espionage_takes_at_least_the_minimum_and_never_more_than_there_is() {
    let mut g = in_phase(2, Phase::Orders);
    player_mut(&mut g, 2).coins = 3;
    let out = resolve_with(&mut g, &[(1, OrderKind::Espionage, Some("bob"))]);
    let stolen: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| m.rule == MoneyRule::Espionage)
        .map(|m| m.delta)
        .collect();
    assert_eq!(stolen, [-3, 3]);
}

#[test]
fn an_order_that_can_no_longer_be_paid_is_void() {
    let mut g = in_phase(2, Phase::Orders);
    ok(&mut g, 2, order(OrderKind::Invest, None));
    player_mut(&mut g, 2).coins = 0;
    let out = deadline(&mut g);
    let text = out.public.iter().find(|t| t.contains("resolved")).unwrap();
    assert!(text.contains("Invest void, unpaid"), "{text}");
    let report = out
        .events
        .iter()
        .find(|e| e.event_type == "round.resolved")
        .unwrap();
    assert_eq!(report.payload["orders"], json!([]));
}

#[test]
fn the_anti_monopoly_commission_fines_a_country_above_half() {
    let mut g = in_phase(3, Phase::Orders);
    for (id, c) in [(1, 400), (2, 100), (3, 100)] {
        player_mut(&mut g, id).coins = c;
    }
    let out = deadline(&mut g);
    // 600 coins in all; Alice holds 100 above half: fined 50, 25 to each other country.
    let fines: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| matches!(m.rule, MoneyRule::AntiMonopolyFine | MoneyRule::AntiMonopolyShare))
        .map(|m| (m.player, m.delta))
        .collect();
    assert_eq!(fines, [(1, -50), (2, 25), (3, 25)]);
    let report = out
        .events
        .iter()
        .find(|e| e.event_type == "round.resolved")
        .unwrap();
    assert_eq!(
        report.payload["fine"],
        json!({"player_id": 1, "fine": 50, "share": 25})
    );
    assert!(
        out.public
            .iter()
            .any(|t| t.contains("Anti-monopoly: Nordavia held 66%"))
    );
}

#[test]
fn exactly_half_is_not_a_monopoly_and_odd_fines_lose_the_remainder() {
    let mut g = in_phase(3, Phase::Orders);
    for (id, c) in [(1, 100), (2, 50), (3, 50)] {
        player_mut(&mut g, id).coins = c;
    }
    let out = deadline(&mut g);
    assert!(!out.ledger.iter().any(|m| m.rule == MoneyRule::AntiMonopolyFine));

    let mut g = in_phase(3, Phase::Orders);
    for (id, c) in [(1, 109), (2, 50), (3, 50)] {
        player_mut(&mut g, id).coins = c;
    }
    // 209 in all, half is 104: excess 5, fine 3 (rounded up), 1 to each other country.
    let out = deadline(&mut g);
    let fines: Vec<_> = out
        .ledger
        .iter()
        .filter(|m| matches!(m.rule, MoneyRule::AntiMonopolyFine | MoneyRule::AntiMonopolyShare))
        .map(|m| m.delta)
        .collect();
    assert_eq!(fines, [-3, 1, 1]);
}

#[test]
fn a_government_at_zero_stability_falls_sits_out_and_recovers() {
    let mut g = in_phase(2, Phase::Orders);
    player_mut(&mut g, 2).stability = 10;
    let out = resolve_with(&mut g, &[(1, OrderKind::Sanctions, Some("bob"))]);
    assert!(
        out.public
            .iter()
            .any(|t| t.contains("government of Sudmark falls"))
    );
    let bob = g.player(2).unwrap();
    assert!(bob.fallen);
    assert_eq!(bob.effective_stability(), 0);
    force_to(&mut g, Phase::Orders);
    assert_eq!(
        refused(&g, 2, order(OrderKind::Propaganda, None)),
        Refusal::GovernmentFallen
    );
    ok(&mut g, 2, Command::Ready);
    let out = deadline(&mut g);
    assert!(out.public.iter().any(|t| t.contains("caretaker")));
    let bob = g.player(2).unwrap();
    assert!(!bob.fallen);
    assert!(
        bob.stability >= CARETAKER_STABILITY - 5,
        "only the event may have cost stability"
    );
}

// ---- events cards -------------------------------------------------------------------------

fn draw(card: EventCard, setup: impl FnOnce(&mut Game)) -> (Game, Game) {
    let mut g = lobby(3);
    g.deck[0] = card;
    setup(&mut g);
    let mut after_income = g.clone();
    after_income.deck[0] = EventCard::GlobalRecession;
    let mut calm_run = after_income;
    ok(&mut calm_run, 1, Command::BeginRound);
    ok(&mut g, 1, Command::BeginRound);
    (calm_run, g)
}

#[test]
fn market_crash_takes_a_fifth_of_every_treasury() {
    let (base, g) = draw(EventCard::MarketCrash, |_| {});
    for p in &base.players {
        let c = p.coins;
        assert_eq!(coins(&g, p.id), c - c * 20 / 100);
    }
}

#[test]
fn ties_for_richest_hit_every_tied_country_and_the_scandal_hits_the_chair() {
    let (base, g) = draw(EventCard::ForeignAid, |g| player_mut(g, 1).coins = 500);
    assert_eq!(coins(&g, 1), coins(&base, 1));
    assert_eq!(coins(&g, 2), coins(&base, 2) + 40);
    assert_eq!(coins(&g, 3), coins(&base, 3) + 40);

    let (_, g) = draw(EventCard::CouncilScandal, |_| {});
    assert_eq!(g.player(1).unwrap().stability, START_STABILITY - 20);
    assert_eq!(g.player(2).unwrap().stability, START_STABILITY);
}

// ---- the end ------------------------------------------------------------------------------

#[test]
fn the_game_finishes_after_the_configured_rounds_with_standings() {
    let mut g = apply(None, &actor(1), start_cmd(3, Some(2))).unwrap().state;
    ok(&mut g, 2, Command::JoinGame);
    ok(&mut g, 3, Command::JoinGame);
    ok(&mut g, 1, Command::BeginRound);
    force_to(&mut g, Phase::Orders);
    let out = deadline(&mut g);
    assert_eq!((g.round, g.phase), (2, Phase::WorldArena));
    assert!(!event_types(&out).contains(&"game.finished"));
    force_to(&mut g, Phase::Orders);
    player_mut(&mut g, 3).coins += 1000;
    let out = deadline(&mut g);
    assert_eq!(g.phase, Phase::Finished);
    let fin = out.events.last().unwrap();
    assert_eq!(fin.event_type, "game.finished");
    assert_eq!(fin.idempotency_key, format!("{GAME_ID}:game.finished"));
    assert_eq!(fin.payload["game_id"], json!(GAME_ID));
    assert_eq!(fin.payload["chat_id"], json!(CHAT_ID));
    assert_eq!(fin.payload["ended_early"], json!(false));
    assert_eq!(fin.payload["winner"]["player_id"], json!(3));
    assert_eq!(fin.payload["winner_id"], json!(3));
    assert_eq!(fin.payload["winner"]["name"], json!("Carol"));
    let standings = fin.payload["standings"].as_array().unwrap();
    assert_eq!(standings.len(), 3);
    assert_eq!(standings[0]["rank"], json!(1));
    assert_eq!(standings[0]["coins"], json!(coins(&g, 3)));
    assert!(out.public.last().unwrap().contains("Carol of Ostrava wins"));
    assert_eq!(refused(&g, 1, Command::Ready), Refusal::GameFinished);
    assert_eq!(refused(&g, 9, Command::JoinGame), Refusal::GameFinished);
    let status = apply(Some(&g), &actor(9), Command::Status).unwrap();
    assert!(status.public[0].contains("Game over after 2 rounds"));
}

#[test]
fn ending_early_needs_a_majority_and_records_no_result() {
    let mut g = in_phase(3, Phase::Negotiations);
    assert_eq!(refused(&g, 2, Command::EndGame), Refusal::EndGameNotProposed);
    let out = ok(&mut g, 1, Command::EndGame);
    assert_eq!(event_types(&out), ["game.end_voted"]);
    assert_eq!(g.phase, Phase::Negotiations, "one of three is no majority");
    assert_eq!(
        refused(&g, 1, Command::EndGame),
        Refusal::AlreadyAgreedToEnd { votes: 1, need: 2 }
    );
    let out = ok(&mut g, 3, Command::EndGame);
    assert_eq!(g.phase, Phase::Finished);
    assert!(g.ended_early);
    assert!(!g.is_rated());
    let fin = out.events.last().unwrap();
    assert_eq!(fin.event_type, "game.finished");
    assert_eq!(fin.payload["ended_early"], json!(true));
    assert_eq!(fin.payload["rated"], json!(false));
    // Nothing for the leaderboard: no winner, no standings to count games from.
    assert_eq!(fin.payload["winner_id"], json!(null));
    assert_eq!(fin.payload["standings"], json!([]));
    assert!(!out.public.last().unwrap().contains("wins"));

    // A proposal lapses with the round.
    let mut g = in_phase(3, Phase::Orders);
    ok(&mut g, 1, Command::EndGame);
    deadline(&mut g);
    assert!(g.end_votes.is_empty());
    assert_eq!(refused(&g, 2, Command::EndGame), Refusal::EndGameNotProposed);

    // In the lobby the chair alone closes the game, and it counts for nobody.
    let mut g = lobby(2);
    assert_eq!(refused(&g, 2, Command::EndGame), Refusal::NotChair);
    let out = ok(&mut g, 1, Command::EndGame);
    let fin = &out.events.last().unwrap().payload;
    assert_eq!((&fin["winner"], &fin["winner_id"]), (&json!(null), &json!(null)));
    assert_eq!(fin["standings"], json!([]));
    assert!(out.public.last().unwrap().contains("ended in the lobby"));
}

// ---- votum --------------------------------------------------------------------------------

#[test]
fn a_majority_passes_the_chair_to_the_next_seat_whoever_is_richest() {
    let mut g = in_phase(4, Phase::Negotiations);
    player_mut(&mut g, 3).coins = 300;
    assert_eq!(refused(&g, 1, Command::Votum), Refusal::ChairCannotCallVotum);
    let out = ok(&mut g, 2, Command::Votum);
    assert_eq!(event_types(&out), ["votum.opened"]);
    assert_eq!(refused(&g, 3, Command::Votum), Refusal::VotumAlreadyOpen);
    assert_eq!(
        refused(&g, 2, Command::VotumVote { yes: true }),
        Refusal::AlreadyVoted
    );
    ok(&mut g, 1, Command::VotumVote { yes: false });
    let out = ok(&mut g, 4, Command::VotumVote { yes: true });
    assert_eq!(g.chair, 1, "2 of 4 is not a majority yet");
    assert_eq!(event_types(&out), ["votum.voted"]);
    let out = ok(&mut g, 3, Command::VotumVote { yes: true });
    assert_eq!(
        event_types(&out),
        ["votum.voted", "votum.resolved", "chair.changed"]
    );
    assert_eq!(g.chair, 2, "the seat after Alice's, not the richest (Carol)");
    assert!(g.votum.is_none());
    assert_eq!(
        out.events[1].idempotency_key,
        format!("{GAME_ID}:votum1:votum.resolved")
    );
    assert_eq!(refused(&g, 1, Command::NextPhase), Refusal::NotChair);
    ok(&mut g, 3, Command::Ready);
    ok(&mut g, 4, Command::Ready);
    ok(&mut g, 2, Command::NextPhase);
}

#[test]
fn a_votum_closes_when_everyone_voted_or_its_phase_ends_not_on_demand() {
    let mut g = in_phase(3, Phase::Orders);
    assert_eq!(refused(&g, 2, Command::VotumResult), Refusal::NoVotum);
    assert_eq!(refused(&g, 2, Command::VotumVote { yes: true }), Refusal::NoVotum);
    ok(&mut g, 2, Command::Votum);
    // Nobody can close it the moment it opens.
    for who in [1, 2, 3] {
        assert_eq!(
            refused(&g, who, Command::VotumResult),
            Refusal::VotumStillOpen { voted: 1, players: 3 }
        );
    }
    // The end of the phase closes it: missing votes abstain.
    let out = deadline(&mut g);
    let resolved = out
        .events
        .iter()
        .find(|e| e.event_type == "votum.resolved")
        .expect("the phase's end closes the vote");
    assert_eq!(resolved.payload["passed"], json!(false));
    assert_eq!(resolved.payload["abstained"], json!(2));
    assert_eq!(g.chair, 1);
    assert!(g.votum.is_none());
    ok(&mut g, 3, Command::Votum);
    assert_eq!(g.votum.as_ref().unwrap().number, 2);
    assert_eq!(
        refused(&g, 9, Command::VotumVote { yes: true }),
        Refusal::NotAPlayer
    );
}

#[test]
fn the_chair_cannot_call_a_vote_against_themselves() {
    let g = in_phase(3, Phase::Negotiations);
    assert_eq!(refused(&g, 1, Command::Votum), Refusal::ChairCannotCallVotum);
}

#[test]
fn a_certain_outcome_closes_the_vote() {
    let mut g = lobby(3);
    ok(&mut g, 3, Command::Votum);
    let out = ok(&mut g, 2, Command::VotumVote { yes: true });
    assert_eq!(
        event_types(&out),
        ["votum.voted", "votum.resolved", "chair.changed"]
    );
    assert_eq!(g.chair, 2);
    assert_eq!(
        refused(&g, 1, Command::VotumVote { yes: false }),
        Refusal::NoVotum
    );

    let mut g = lobby(2);
    ok(&mut g, 2, Command::Votum);
    let out = ok(&mut g, 1, Command::VotumVote { yes: false });
    assert_eq!(out.events[1].payload["passed"], json!(false));
    assert_eq!(g.chair, 1);
}

#[test]
fn a_lone_creator_cannot_call_a_votum() {
    let g = lobby(1);
    assert_eq!(refused(&g, 1, Command::Votum), Refusal::ChairCannotCallVotum);
}

// ---- read-only and state ------------------------------------------------------------------

#[test]
fn status_and_gameinfo_change_nothing_and_keep_figures_private() {
    let mut g = in_phase(3, Phase::Orders);
    ok(&mut g, 2, order(OrderKind::Invest, None));
    for cmd in [Command::Status, Command::GameInfo] {
        let out = apply(Some(&g), &actor(2), cmd.clone()).unwrap();
        assert_eq!(out.state, g);
        assert!(out.events.is_empty() && out.ledger.is_empty());
        assert!(out.public[0].contains("Round 1/5 · orders"), "{}", out.public[0]);
        assert!(!out.public[0].contains("coins"), "treasuries are private");
        assert_eq!(out.private.len(), 1);
        assert_eq!(out.private[0].to, 2);
        assert!(out.private[0].text.contains("Your decrees: Invest"));
        let stranger = apply(Some(&g), &actor(9), cmd).unwrap();
        assert!(stranger.private.is_empty());
    }
    let info = apply(Some(&g), &actor(1), Command::GameInfo).unwrap();
    assert!(info.public[0].contains("1. Nordavia — Alice 👑 · economy"));
}

#[test]
fn the_state_survives_a_json_snapshot() {
    let mut g = in_phase(3, Phase::Orders);
    ok(&mut g, 2, order(OrderKind::Sanctions, Some("carol")));
    ok(&mut g, 2, Command::Votum);
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(json["phase"], json!("orders"));
    assert_eq!(json["orders"][0]["kind"], json!("sanctions"));
    let back: Game = serde_json::from_value(json).unwrap();
    assert_eq!(back, g);
}

#[test]
fn the_rules_text_is_served_from_the_engine() {
    let t = rules_text();
    assert!(t.contains("NeMonopolia"));
    assert!(t.contains(&format!("{MIN_PLAYERS}–{MAX_PLAYERS}")));
}
