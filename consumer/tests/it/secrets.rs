//! Secrets stay out of `--help` and out of configuration errors.

use outbox::testkit::help_pages_showing;

#[test]
fn help_of_every_subcommand_hides_the_database_and_kafka_passwords() {
    let env = [
        ("DATABASE_URL", "postgres://app:Db-Pw-4711@db.example:5432/app"),
        (
            "CONSUMER_KAFKA_CONFIG",
            "security.protocol=SASL_SSL,sasl.username=u,sasl.password=Kafka-Pw-4711,sasl.oauthbearer.client.secret=Oauth-Pw-4711",
        ),
    ];
    let (pages, leaking) = help_pages_showing(
        env!("CARGO_BIN_EXE_consumer"),
        &env,
        &["Db-Pw-4711", "Kafka-Pw-4711", "Oauth-Pw-4711"],
    );
    // consumer, run, redrive, migrate.
    assert!(pages >= 4, "only {pages} help pages found");
    assert!(leaking.is_empty(), "secrets shown by: {leaking:?}");
}

#[test]
fn a_bad_kafka_property_is_one_line_naming_it_without_its_value() {
    for (config, expected) in [
        ("ssl.key.pasword=Typo-Pw-4711", "ssl.key.pasword"),
        (
            "enable.auto.offset.store=true",
            "enable.auto.offset.store may not be set here",
        ),
    ] {
        outbox::testkit::assert_refused_in_one_line(
            env!("CARGO_BIN_EXE_consumer"),
            &["redrive", "--kafka-config", config],
            1,
            "CONSUMER_KAFKA_CONFIG",
            expected,
            "Pw-4711",
        );
    }
}
