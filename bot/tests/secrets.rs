//! Secrets stay out of `--help`.

use outbox::testkit::help_pages_showing;

#[test]
fn help_of_every_subcommand_hides_the_database_password_and_the_bot_token() {
    let env = [
        ("DATABASE_URL", "postgres://bot:Db-Pw-4711@db.example:5432/app"),
        ("TELEGRAM_BOT_TOKEN", "123456:Token-4711"),
    ];
    let (pages, leaking) = help_pages_showing(env!("CARGO_BIN_EXE_bot"), &env, &["Db-Pw-4711", "Token-4711"]);
    // bot, run, console, migrate, replay.
    assert!(pages >= 5, "only {pages} help pages found");
    assert!(leaking.is_empty(), "secrets shown by: {leaking:?}");
}
