//! Keeps `docker-compose.yml`, `Dockerfile`, `.env.example`, `deploy/prometheus.yml`,
//! `deploy/grafana` and the README in step with each other. No Docker engine runs here: the
//! compose file is validated and resolved by Debian's `docker-compose` (1.29, which needs no
//! engine for `config`), and its resolved form is read back with a small reader for the block
//! YAML that `config` prints.
//!
//! Run: `cargo test -p outbox --test compose` (needs `docker-compose` and `promtool`:
//! `apt-get install docker-compose prometheus`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The services of the compose stack, in the order the README lists them.
const SERVICES: &[&str] = &[
    "pg",
    "kafka",
    "kafka-ui",
    "migrator",
    "relay",
    "consumer",
    "bot",
    "prometheus",
    "grafana",
];
/// The services that run our image (and read our settings).
const APP_SERVICES: &[&str] = &["migrator", "relay", "consumer", "bot"];
/// The settings whose container value is the compose-network address, not the host-mode one.
const NETWORK_ADDRESSES: &[&str] = &["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"];
/// Settings of the compose file itself (image version, host ports, Grafana's password): listed
/// in `.env.example`, substituted by compose, read by none of our binaries.
const COMPOSE_SETTINGS: &[&str] = &[
    "POSTGRES_VERSION",
    "PG_HOST_PORT",
    "KAFKA_HOST_PORT",
    "KAFKA_UI_HOST_PORT",
    "PROMETHEUS_HOST_PORT",
    "GRAFANA_HOST_PORT",
    "GRAFANA_ADMIN_PASSWORD",
];

// ------------------------------------------------------------------------------------------
// Running docker-compose

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn docker_compose_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("docker-compose"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "docker-compose not found: these tests validate docker-compose.yml with Debian's \
             docker-compose package (no Docker engine needed). Install it: apt-get install docker-compose"
        ),
    }
}

/// An env file with the given content, for `--env-file` (so a developer's own `.env` in the
/// repository never leaks into the tests).
fn env_file(name: &str, content: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("compose-test-{name}-{}.env", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

/// Runs `docker-compose --env-file <env_file> -f docker-compose.yml <args>` with a clean
/// environment plus `vars`; returns stdout, panics with stderr on failure.
fn compose(env_file: &Path, vars: &[(&str, &str)], args: &[&str]) -> String {
    let root = root();
    let mut cmd = Command::new(docker_compose_bin());
    cmd.current_dir(&root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .env("LANG", "C.UTF-8")
        .arg("--env-file")
        .arg(env_file)
        .arg("-f")
        .arg(root.join("docker-compose.yml"))
        .args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running docker-compose");
    assert!(
        out.status.success(),
        "docker-compose {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The resolved compose file with no settings at all (every `${VAR:-default}` at its default)
/// and the bot profile on.
fn default_config() -> &'static Yaml {
    static CONFIG: OnceLock<Yaml> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let empty = env_file("empty", "");
        Yaml::parse(&compose(&empty, &[], &["--profile", "bot", "config"]))
    })
}

fn service<'a>(config: &'a Yaml, name: &str) -> &'a Yaml {
    config
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("service {name} missing from docker-compose.yml"))
}

fn environment(config: &Yaml, name: &str) -> BTreeMap<String, String> {
    match service(config, name).get("environment") {
        None => BTreeMap::new(),
        Some(env) => env
            .entries()
            .iter()
            .map(|(k, v)| (k.clone(), v.scalar().to_string()))
            .collect(),
    }
}

fn strings(node: Option<&Yaml>) -> Vec<String> {
    node.map(|n| n.items().iter().map(|i| i.scalar().to_string()).collect())
        .unwrap_or_default()
}

/// Host port -> container port of a service's `ports` (short syntax as 1.29 prints it:
/// `[ip:]host:container[/proto]`).
fn published(config: &Yaml, name: &str) -> BTreeMap<u16, u16> {
    let mut map = BTreeMap::new();
    for p in strings(service(config, name).get("ports")) {
        let spec = p.split('/').next().unwrap();
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, container) = match parts.as_slice() {
            [_ip, host, container] => (*host, *container),
            [host, container] => (*host, *container),
            _ => panic!("{name}: port {p:?} publishes no fixed host port"),
        };
        map.insert(host.parse().unwrap(), container.parse().unwrap());
    }
    map
}

// ------------------------------------------------------------------------------------------
// .env.example

/// The settings of `.env.example` in file order, with their values. Asserts the format: one
/// `NAME=value` a line, each right below a one-line `#` comment, no duplicates.
fn env_example() -> Vec<(String, String)> {
    let text = read(".env.example");
    let mut vars = Vec::new();
    let mut previous = "";
    for (no, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if !(line.is_empty() || line.starts_with('#')) {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example:{}: not NAME=value: {line:?}", no + 1));
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                ".env.example:{}: bad variable name {name:?}",
                no + 1
            );
            assert!(
                previous.starts_with('#') && previous.len() > 2,
                ".env.example:{}: {name} needs a one-line comment right above it",
                no + 1
            );
            assert!(
                !vars.iter().any(|(n, _)| n == name),
                ".env.example: {name} listed twice"
            );
            vars.push((name.to_string(), value.to_string()));
        }
        previous = line;
    }
    assert!(
        vars.len() >= 10,
        ".env.example lists only {} settings",
        vars.len()
    );
    vars
}

/// Names used in `${NAME...}` and `$NAME` substitutions of the raw compose file (`$$` is a
/// literal dollar).
fn substituted_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        }
        let braced = rest.starts_with('{');
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !name.is_empty() || !braced,
            "unreadable substitution near {:?}",
            &rest[..rest.len().min(30)]
        );
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

// ------------------------------------------------------------------------------------------
// Tests

#[test]
fn compose_file_is_valid_with_and_without_the_bot_profile() {
    let empty = env_file("valid", "");
    // Without a token and without the profile: must pass, or `docker compose up -d pg kafka`
    // (the seed's first step) would fail for everyone who has no bot token.
    compose(&empty, &[], &["config", "-q"]);
    // With the bot profile and a token, as a bot user runs it.
    compose(
        &empty,
        &[("TELEGRAM_BOT_TOKEN", "123456:test-token")],
        &["--profile", "bot", "config", "-q"],
    );
    let with_token = Yaml::parse(&compose(
        &empty,
        &[("TELEGRAM_BOT_TOKEN", "123456:test-token")],
        &["--profile", "bot", "config"],
    ));
    assert_eq!(
        environment(&with_token, "bot")
            .get("TELEGRAM_BOT_TOKEN")
            .map(String::as_str),
        Some("123456:test-token"),
        "the bot must receive TELEGRAM_BOT_TOKEN from the environment"
    );
}

#[test]
fn services_are_exactly_the_designed_set() {
    let empty = env_file("services", "");
    let listed: BTreeSet<String> = compose(&empty, &[], &["--profile", "bot", "config", "--services"])
        .lines()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed, expected, "docker-compose config --services");

    let config = default_config();
    let parsed: BTreeSet<String> = config
        .get("services")
        .unwrap()
        .entries()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(parsed, expected, "services in the resolved file");

    for name in SERVICES {
        let profiles = strings(service(config, name).get("profiles"));
        if *name == "bot" {
            assert_eq!(profiles, ["bot"], "bot runs only with --profile bot");
        } else {
            assert!(
                profiles.is_empty(),
                "{name} must start without a profile, has {profiles:?}"
            );
        }
    }
}

#[test]
fn host_ports_of_the_seed_are_published() {
    let config = default_config();
    assert_eq!(published(config, "pg"), BTreeMap::from([(5432, 5432)]), "pg");
    assert_eq!(
        published(config, "kafka-ui"),
        BTreeMap::from([(8088, 8080)]),
        "kafka-ui"
    );
    assert_eq!(
        published(config, "prometheus"),
        BTreeMap::from([(9090, 9090)]),
        "prometheus"
    );
    assert_eq!(
        published(config, "grafana"),
        BTreeMap::from([(3000, 3000)]),
        "grafana"
    );
    let kafka = published(config, "kafka");
    assert!(
        kafka.contains_key(&19092),
        "kafka must publish host port 19092, publishes {kafka:?}"
    );
    // Relay and consumer can be scaled (standby relays): a fixed host port would clash.
    for name in ["relay", "consumer", "migrator", "bot"] {
        assert!(
            published(config, name).is_empty(),
            "{name} must not publish host ports"
        );
    }
}

/// Listener name -> port, from `NAME://host:port,...`.
fn listeners(spec: &str) -> BTreeMap<String, (String, u16)> {
    spec.split(',')
        .map(|l| {
            let (name, addr) = l
                .split_once("://")
                .unwrap_or_else(|| panic!("bad listener {l:?}"));
            let (host, port) = addr
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("bad listener {l:?}"));
            (name.to_string(), (host.to_string(), port.parse().unwrap()))
        })
        .collect()
}

#[test]
fn kafka_is_reachable_as_kafka_19092_inside_and_localhost_19092_from_the_host() {
    let config = default_config();
    let env = environment(config, "kafka");
    assert!(
        env.contains_key("KAFKA_PROCESS_ROLES") && env["KAFKA_PROCESS_ROLES"].contains("controller"),
        "KRaft"
    );
    let bound = listeners(&env["KAFKA_LISTENERS"]);
    let advertised = listeners(&env["KAFKA_ADVERTISED_LISTENERS"]);

    // In-network: a listener on container port 19092 that advertises kafka:19092.
    let inside = advertised
        .iter()
        .find(|(_, (host, port))| host == "kafka" && *port == 19092)
        .map(|(name, _)| name.clone())
        .expect("a listener advertised as kafka:19092");
    assert_eq!(
        bound[&inside].1, 19092,
        "listener {inside} must listen on container port 19092"
    );

    // Host: a listener advertised as localhost:19092 whose container port is what host port
    // 19092 is forwarded to.
    let host = advertised
        .iter()
        .find(|(_, (h, port))| h == "localhost" && *port == 19092)
        .map(|(name, _)| name.clone())
        .expect("a listener advertised as localhost:19092");
    let target = published(config, "kafka")[&19092];
    assert_eq!(
        bound[&host].1, target,
        "host port 19092 must reach listener {host}"
    );
    assert_ne!(inside, host);

    let protocols = &env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"];
    for name in bound.keys() {
        assert!(
            protocols.contains(&format!("{name}:")),
            "{name} missing from KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"
        );
    }
    assert!(
        service(config, "kafka")
            .get("image")
            .unwrap()
            .scalar()
            .starts_with("apache/kafka:")
    );
    assert!(
        service(config, "kafka").get("healthcheck").is_some(),
        "kafka needs a healthcheck"
    );

    // Everyone in the network uses the in-network address.
    for name in ["relay", "consumer"] {
        assert_eq!(
            environment(config, name)["KAFKA_BOOTSTRAP_SERVERS"],
            "kafka:19092",
            "{name}"
        );
    }
    assert_eq!(
        environment(config, "kafka-ui")["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"],
        "kafka:19092"
    );
}

#[test]
fn containers_use_network_addresses_even_with_a_host_mode_env_file() {
    // A user who followed the seed (`cp .env.example .env`) has host addresses in .env, which
    // compose reads for substitution. The containers must still get pg:5432 and kafka:19092,
    // while the other settings pass through (the seed's replay recipe sets the group).
    let host_mode = env_file("host-mode", &read(".env.example"));
    let config = Yaml::parse(&compose(
        &host_mode,
        &[
            ("KAFKA_CONSUMER_GROUP", "game-consumer-replay-1"),
            ("KAFKA_TOPIC", "other-events"),
        ],
        &["--profile", "bot", "config"],
    ));
    for name in APP_SERVICES {
        let env = environment(&config, name);
        let url = &env["DATABASE_URL"];
        assert!(
            url.contains("@pg:5432/bot_game_test"),
            "{name}: DATABASE_URL {url}"
        );
        if let Some(kafka) = env.get("KAFKA_BOOTSTRAP_SERVERS") {
            assert_eq!(kafka, "kafka:19092", "{name}");
        }
    }
    assert_eq!(
        environment(&config, "consumer")["KAFKA_CONSUMER_GROUP"],
        "game-consumer-replay-1"
    );
    assert_eq!(environment(&config, "relay")["KAFKA_TOPIC"], "other-events");
    assert_eq!(environment(&config, "consumer")["KAFKA_TOPIC"], "other-events");
}

#[test]
fn env_example_lists_every_setting_our_services_read_with_host_mode_defaults() {
    let example = env_example();
    let names: BTreeSet<String> = example.iter().map(|(n, _)| n.clone()).collect();
    let values: BTreeMap<String, String> = example.iter().cloned().collect();

    // Host-mode defaults, as the seed says.
    assert_eq!(
        values["DATABASE_URL"],
        "postgres://postgres:postgres@localhost:5432/bot_game_test"
    );
    assert_eq!(values["KAFKA_BOOTSTRAP_SERVERS"], "localhost:19092");
    assert_eq!(values["KAFKA_TOPIC"], "game-events");
    assert!(values.contains_key("KAFKA_CONSUMER_GROUP") && values.contains_key("TELEGRAM_BOT_TOKEN"));

    let config = default_config();
    let mut read_by_services = BTreeSet::new();
    for name in APP_SERVICES {
        for (var, value) in environment(config, name) {
            assert!(
                names.contains(&var),
                "service {name} reads {var}, which .env.example does not list"
            );
            // With nothing set, a container gets .env.example's value, except for the two
            // addresses, which are the compose network's.
            if !NETWORK_ADDRESSES.contains(&var.as_str()) {
                assert_eq!(
                    value, values[&var],
                    "{name}: default of {var} differs from .env.example"
                );
            }
            read_by_services.insert(var);
        }
    }
    let raw = read("docker-compose.yml");
    let code: String = raw
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for var in substituted_names(&code) {
        assert!(
            names.contains(&var),
            "docker-compose.yml substitutes ${{{var}}}, which .env.example does not list"
        );
    }
    // The compose file's own settings: each substituted, with .env.example's value as default.
    let substituted = substituted_names(&code);
    for var in COMPOSE_SETTINGS {
        assert!(names.contains(*var), ".env.example does not list {var}");
        assert!(
            substituted.contains(*var),
            "docker-compose.yml does not use {var}"
        );
        let default = format!("${{{var}:-{}}}", values[*var]);
        assert!(
            code.contains(&default),
            "docker-compose.yml must substitute {default} (.env.example's value)"
        );
        read_by_services.insert(var.to_string());
    }
    // And the other way round: every setting reaches the containers that need it.
    let unused: Vec<_> = names.difference(&read_by_services).collect();
    assert!(
        unused.is_empty(),
        "settings in .env.example that no compose service receives: {unused:?}"
    );
}

#[test]
fn readme_documents_every_setting() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the README's configuration table must list every setting of .env.example)",
            path.display()
        )
    });
    let missing = undocumented(&env_example(), &readme);
    assert!(
        missing.is_empty(),
        "README.md does not mention these settings of .env.example: {missing:?}"
    );
}

/// The settings a README text never names (as a whole word: `KAFKA_TOPIC` is not documented by
/// `KAFKA_TOPIC_ROUTES`).
fn undocumented(settings: &[(String, String)], readme: &str) -> Vec<String> {
    let words: BTreeSet<&str> = readme
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    settings
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| !words.contains(n.as_str()))
        .collect()
}

#[test]
fn pg_runs_postgres_16_with_our_postgres_conf() {
    let config = default_config();
    let pg = service(config, "pg");
    assert!(pg.get("image").unwrap().scalar().starts_with("postgres:16"));
    let conf = root().join("postgres.conf");
    assert!(conf.is_file(), "postgres.conf missing");
    let mount = format!("{}:/etc/postgresql/postgresql.conf", conf.display());
    let volumes = strings(pg.get("volumes"));
    assert!(
        volumes.iter().any(|v| v.starts_with(&mount)),
        "pg must mount {mount}, has {volumes:?}"
    );
    let command = match pg.get("command").unwrap() {
        Yaml::Seq(items) => items.iter().map(|i| i.scalar()).collect::<Vec<_>>().join(" "),
        other => other.scalar().to_string(),
    };
    assert!(
        command.contains("config_file=/etc/postgresql/postgresql.conf"),
        "pg command: {command}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(":/var/lib/postgresql/data:rw")),
        "pg needs a data volume"
    );
    let test = strings(pg.get("healthcheck").and_then(|h| h.get("test"))).join(" ");
    assert!(test.contains("pg_isready"), "pg healthcheck: {test}");

    let env = environment(config, "pg");
    let url = &environment(config, "relay")["DATABASE_URL"];
    let expected = format!(
        "postgres://{}:{}@pg:5432/{}",
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    );
    assert_eq!(
        url, &expected,
        "the services' DATABASE_URL must match pg's user, password and database"
    );
    assert!(read("postgres.conf").contains("wal_level = logical"));
}

#[test]
fn app_services_run_our_image_in_the_right_order() {
    let config = default_config();
    let dockerfile = read("Dockerfile");
    let cmd = |name: &str| strings(service(config, name).get("command"));
    assert_eq!(
        cmd("migrator"),
        ["sh", "-c", "relay-cdc migrate && consumer migrate && bot migrate"]
    );
    assert_eq!(cmd("relay"), ["relay-cdc", "run"]);
    assert_eq!(cmd("consumer"), ["consumer", "run"]);
    assert_eq!(cmd("bot"), ["bot", "run"]);

    let image = service(config, "migrator")
        .get("image")
        .unwrap()
        .scalar()
        .to_string();
    for name in APP_SERVICES {
        let svc = service(config, name);
        assert_eq!(
            svc.get("image").unwrap().scalar(),
            image,
            "{name}: one image for all binaries"
        );
        let build = svc
            .get("build")
            .unwrap_or_else(|| panic!("{name} must build our image"));
        assert_eq!(
            build.get("context").unwrap().scalar(),
            root().display().to_string()
        );
        assert_eq!(build.get("dockerfile").unwrap().scalar(), "Dockerfile");
        // `sh -c "a migrate && b migrate"` runs several of our binaries.
        let command = cmd(name);
        let binaries: Vec<String> = if command[0] == "sh" {
            command[2]
                .split("&&")
                .map(|step| step.split_whitespace().next().unwrap().to_string())
                .collect()
        } else {
            vec![command[0].clone()]
        };
        for binary in &binaries {
            assert!(
                dockerfile.contains(&format!("target/release/{binary}")),
                "Dockerfile must ship {binary}"
            );
            assert!(
                root().join(binary).join("Cargo.toml").is_file(),
                "{binary} is not a workspace crate"
            );
        }
    }

    let condition = |name: &str, dep: &str| {
        service(config, name)
            .get("depends_on")
            .and_then(|d| d.get(dep))
            .and_then(|d| d.get("condition"))
            .map(|c| c.scalar().to_string())
            .unwrap_or_else(|| panic!("{name} must depend on {dep}"))
    };
    assert_eq!(condition("migrator", "pg"), "service_healthy");
    for name in ["relay", "consumer", "bot"] {
        assert_eq!(
            condition(name, "migrator"),
            "service_completed_successfully",
            "{name}"
        );
    }
    for name in ["relay", "consumer", "kafka-ui"] {
        assert_eq!(condition(name, "kafka"), "service_healthy", "{name}");
    }
    assert_eq!(service(config, "migrator").get("restart").unwrap().scalar(), "no");
}

#[test]
fn prometheus_scrapes_the_relay_and_the_consumer() {
    let config = default_config();
    let prom = service(config, "prometheus");
    let mount = format!(
        "{}:/etc/prometheus/prometheus.yml",
        root().join("deploy/prometheus.yml").display()
    );
    assert!(
        strings(prom.get("volumes")).iter().any(|v| v.starts_with(&mount)),
        "prometheus must mount {mount}"
    );

    let file = root().join("deploy/prometheus.yml");
    let out = Command::new("promtool").arg("check").arg("config").arg(&file).output().unwrap_or_else(|e| {
        panic!("promtool: {e}: install Debian's prometheus package (apt-get install prometheus) to check deploy/prometheus.yml")
    });
    assert!(
        out.status.success(),
        "promtool check config deploy/prometheus.yml:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The scrape targets match the metrics addresses the services are given.
    let scrape = std::fs::read_to_string(&file).unwrap();
    for (name, var) in [
        ("relay", "RELAY_METRICS_ADDR"),
        ("consumer", "CONSUMER_METRICS_ADDR"),
    ] {
        let addr = environment(config, name)[var].clone();
        let port = addr.rsplit_once(':').unwrap().1.to_string();
        assert!(
            strings(service(config, name).get("expose")).contains(&port),
            "{name} must expose {port}"
        );
        let job = scrape
            .split("job_name:")
            .find(|j| j.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("deploy/prometheus.yml has no job {name}"));
        assert!(
            job.contains(&format!("names: [{name}]")) || job.contains(&format!("{name}:{port}")),
            "job {name}: {job}"
        );
        assert!(job.contains(&port), "job {name} must scrape port {port}");
    }
}

#[test]
fn postgres_version_and_host_ports_are_settings() {
    let env = env_file("settings", "");
    let config = Yaml::parse(&compose(
        &env,
        &[
            ("POSTGRES_VERSION", "17"),
            ("PG_HOST_PORT", "25432"),
            ("KAFKA_HOST_PORT", "29999"),
            ("PROMETHEUS_HOST_PORT", "29090"),
            ("GRAFANA_HOST_PORT", "23000"),
            ("KAFKA_UI_HOST_PORT", "28088"),
        ],
        &["config"],
    ));
    assert_eq!(
        service(&config, "pg").get("image").unwrap().scalar(),
        "postgres:17"
    );
    assert_eq!(published(&config, "pg"), BTreeMap::from([(25432, 5432)]));
    assert_eq!(published(&config, "prometheus"), BTreeMap::from([(29090, 9090)]));
    assert_eq!(published(&config, "grafana"), BTreeMap::from([(23000, 3000)]));
    assert_eq!(published(&config, "kafka-ui"), BTreeMap::from([(28088, 8080)]));
    // The broker tells host clients the port they came in on.
    let kafka = environment(&config, "kafka");
    let advertised = listeners(&kafka["KAFKA_ADVERTISED_LISTENERS"]);
    assert_eq!(advertised["HOST"], ("localhost".to_string(), 29999));
    let target = listeners(&kafka["KAFKA_LISTENERS"])["HOST"].1;
    assert_eq!(published(&config, "kafka"), BTreeMap::from([(29999, target)]));
}

#[test]
fn grafana_admin_password_comes_from_the_environment() {
    let config = default_config();
    let env = environment(config, "grafana");
    assert_eq!(
        env["GF_SECURITY_ADMIN_PASSWORD"], "",
        "no password unless the user sets one"
    );
    // Unset, the entrypoint makes up a random one instead of Grafana's built-in default.
    let entrypoint = strings(service(config, "grafana").get("entrypoint")).join(" ");
    assert!(
        entrypoint.contains("/dev/urandom") && entrypoint.contains("exec /run.sh"),
        "{entrypoint}"
    );
    let set = env_file("grafana", "GRAFANA_ADMIN_PASSWORD=s3cret-Pass\n");
    let config = Yaml::parse(&compose(&set, &[], &["config"]));
    assert_eq!(
        environment(&config, "grafana")["GF_SECURITY_ADMIN_PASSWORD"],
        "s3cret-Pass"
    );
}

#[test]
fn grafana_is_provisioned_with_prometheus_and_the_dashboard() {
    let config = default_config();
    let grafana = service(config, "grafana");
    assert!(
        grafana
            .get("image")
            .unwrap()
            .scalar()
            .starts_with("grafana/grafana-oss:"),
        "grafana image"
    );
    let condition = grafana
        .get("depends_on")
        .and_then(|d| d.get("prometheus"))
        .and_then(|d| d.get("condition"))
        .map(|c| c.scalar().to_string());
    assert_eq!(
        condition.as_deref(),
        Some("service_started"),
        "grafana depends on prometheus"
    );

    // Container path each deploy/grafana folder is mounted at.
    let volumes = strings(grafana.get("volumes"));
    let mounted = |dir: &str| {
        let source = format!("{}:", root().join(dir).display());
        volumes
            .iter()
            .find_map(|v| v.strip_prefix(&source))
            .map(|rest| rest.split(':').next().unwrap().to_string())
            .unwrap_or_else(|| panic!("grafana must mount {dir}, has {volumes:?}"))
    };
    assert_eq!(
        mounted("deploy/grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards = mounted("deploy/grafana/dashboards");

    // The datasource points at the prometheus service's container port, with the uid the
    // dashboard's panels name.
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    let value = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{key} missing in:\n{text}"))
    };
    let target = published(config, "prometheus")[&9090];
    assert_eq!(value(&datasource, "url"), format!("http://prometheus:{target}"));
    assert_eq!(value(&datasource, "type"), "prometheus");
    let uid = value(&datasource, "uid");

    // The dashboard provider reads the folder the dashboards are mounted at.
    let provider = read("deploy/grafana/provisioning/dashboards/outbox.yml");
    assert_eq!(value(&provider, "path"), dashboards);
    let env = environment(config, "grafana");
    assert_eq!(
        env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
        format!("{dashboards}/outbox.json")
    );
    assert!(
        env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str) == Some("true")
            || env.contains_key("GF_SECURITY_ADMIN_PASSWORD"),
        "grafana needs anonymous access or known admin credentials"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/outbox.json")).expect("outbox.json is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], uid,
            "panel {} must use the provisioned datasource",
            panel["title"]
        );
    }
}

#[test]
fn dockerfile_builds_one_non_root_image_for_the_workspace() {
    let dockerfile = read("Dockerfile");
    let from: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "multi-stage: builder and runtime, got {from:?}");
    assert!(
        from[0].contains("rust:") && from[0].contains(" AS builder"),
        "{}",
        from[0]
    );
    assert!(
        from[1].contains("debian:") && from[1].contains("-slim"),
        "{}",
        from[1]
    );
    assert!(dockerfile.contains("ARG DEBIAN_SUITE=bookworm"));
    assert!(dockerfile.contains("cargo build --release --locked -p relay-cdc -p consumer -p bot"));
    for tool in [
        "cmake",
        "pkg-config",
        "build-essential",
        "zlib1g-dev",
        "ca-certificates",
    ] {
        assert!(dockerfile.contains(tool), "Dockerfile must install {tool}");
    }
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("the runtime must not run as root");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");

    // The builder's toolchain satisfies the workspace's rust-version.
    let arg = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("rust-version")
                .map(|r| r.trim_start_matches([' ', '=']).trim_matches('"'))
        })
        .expect("rust-version in Cargo.toml");
    let version = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        version(arg) >= version(msrv),
        "rust:{arg} is older than rust-version {msrv}"
    );

    // The build context keeps what the build needs and drops the heavy local state.
    let dockerignore = read(".dockerignore");
    let ignore: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for needed in [
        "migrations",
        "Cargo.lock",
        "Cargo.toml",
        "src",
        "outbox",
        "relay-cdc",
        "consumer",
        "bot",
    ] {
        assert!(
            !ignore
                .iter()
                .any(|l| l.trim_end_matches('/') == needed || *l == format!("{needed}/")),
            ".dockerignore must not exclude {needed}"
        );
    }
    for heavy in ["target/", ".git/", ".services/", ".env"] {
        assert!(ignore.contains(&heavy), ".dockerignore must exclude {heavy}");
    }
}

// ------------------------------------------------------------------------------------------
// A reader for the block YAML that `docker-compose config` prints (PyYAML's dump): block
// mappings, block sequences (also "indentless" under a key), plain and quoted scalars (plain
// ones may be folded onto more-indented continuation lines), `{}` and `[]`.

#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Scalar(String),
}

impl Yaml {
    fn parse(text: &str) -> Yaml {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| (l.len() - l.trim_start().len(), l.trim()))
            .collect();
        let mut pos = 0;
        let node = parse_block(&lines, &mut pos, 0);
        assert_eq!(pos, lines.len(), "unread YAML from line {:?}", lines.get(pos));
        node
    }

    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            Yaml::Scalar(s) if s.is_empty() => &[],
            other => panic!("expected a mapping, got {other:?}"),
        }
    }

    fn items(&self) -> &[Yaml] {
        match self {
            Yaml::Seq(items) => items,
            Yaml::Scalar(s) if s.is_empty() => &[],
            other => panic!("expected a sequence, got {other:?}"),
        }
    }

    fn scalar(&self) -> &str {
        match self {
            Yaml::Scalar(s) => s,
            other => panic!("expected a scalar, got {other:?}"),
        }
    }
}

fn parse_block(lines: &[(usize, &str)], pos: &mut usize, indent: usize) -> Yaml {
    if lines[*pos].1.starts_with("- ") || lines[*pos].1 == "-" {
        parse_seq(lines, pos, indent)
    } else {
        parse_map(lines, pos, indent)
    }
}

fn parse_map(lines: &[(usize, &str)], pos: &mut usize, indent: usize) -> Yaml {
    let mut entries = Vec::new();
    while *pos < lines.len() && lines[*pos].0 == indent && !lines[*pos].1.starts_with("- ") {
        let line = lines[*pos].1;
        *pos += 1;
        let (key, rest) = split_key(line).unwrap_or_else(|| panic!("not a mapping entry: {line:?}"));
        entries.push((key, value_after(lines, pos, indent, rest)));
    }
    Yaml::Map(entries)
}

fn parse_seq(lines: &[(usize, &str)], pos: &mut usize, indent: usize) -> Yaml {
    let mut items = Vec::new();
    while *pos < lines.len() && lines[*pos].0 == indent && lines[*pos].1.starts_with('-') {
        let rest = lines[*pos].1[1..].trim_start();
        if split_key(rest).is_some() && !rest.starts_with(['\'', '"']) {
            // "- key: value" starts a mapping whose entries sit at indent + 2.
            let mut local: Vec<(usize, &str)> = vec![(indent + 2, rest)];
            *pos += 1;
            while *pos < lines.len() && lines[*pos].0 > indent {
                local.push(lines[*pos]);
                *pos += 1;
            }
            let mut p = 0;
            items.push(parse_map(&local, &mut p, indent + 2));
        } else {
            *pos += 1;
            items.push(value_after(lines, pos, indent, rest));
        }
    }
    Yaml::Seq(items)
}

/// The value of an entry whose text after the key (or dash) is `rest`, on a line at `indent`.
fn value_after(lines: &[(usize, &str)], pos: &mut usize, indent: usize, rest: &str) -> Yaml {
    if rest.is_empty() {
        return match lines.get(*pos) {
            Some(&(i, _)) if i > indent => parse_block(lines, pos, i),
            // PyYAML writes a mapping's sequence at the key's own indentation.
            Some(&(i, l)) if i == indent && l.starts_with('-') => parse_seq(lines, pos, i),
            _ => Yaml::Scalar(String::new()),
        };
    }
    if rest == "{}" {
        return Yaml::Map(Vec::new());
    }
    if rest == "[]" {
        return Yaml::Seq(Vec::new());
    }
    let mut text = rest.to_string();
    while let Some(&(i, l)) = lines.get(*pos) {
        if i <= indent {
            break;
        }
        text.push(' ');
        text.push_str(l);
        *pos += 1;
    }
    Yaml::Scalar(unquote(&text))
}

/// `key: rest` or `key:` (key possibly quoted) -> (key, rest).
fn split_key(line: &str) -> Option<(String, &str)> {
    if let Some(q) = line.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let end = line[1..].find(q)? + 1;
        let after = line[end + 1..].strip_prefix(':')?;
        return Some((line[1..end].to_string(), after.trim_start()));
    }
    if let Some(key) = line.strip_suffix(':') {
        if !key.contains(": ") {
            return Some((key.to_string(), ""));
        }
    }
    let (key, rest) = line.split_once(": ")?;
    Some((key.to_string(), rest))
}

fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        s.to_string()
    }
}

#[test]
fn yaml_reader_reads_what_docker_compose_prints() {
    let doc = Yaml::parse(
        "services:\n  a:\n    command:\n    - x\n    - 'y z'\n    environment:\n      A: '5'\n      B: ''\n      C: \"true\"\n    \
         healthcheck:\n      test:\n      - CMD\n      - long words\n        folded here\n    ports:\n    - published: 1\n      target: 2\n  \
         b: {}\nvolumes:\n  v: {}\n",
    );
    let a = doc.get("services").unwrap().get("a").unwrap();
    assert_eq!(strings(a.get("command")), ["x", "y z"]);
    let env = a.get("environment").unwrap();
    assert_eq!(env.get("A").unwrap().scalar(), "5");
    assert_eq!(env.get("B").unwrap().scalar(), "");
    assert_eq!(env.get("C").unwrap().scalar(), "true");
    assert_eq!(
        strings(a.get("healthcheck").unwrap().get("test")),
        ["CMD", "long words folded here"]
    );
    let port = &a.get("ports").unwrap().items()[0];
    assert_eq!(port.get("target").unwrap().scalar(), "2");
    assert_eq!(
        doc.get("services").unwrap().get("b"),
        Some(&Yaml::Map(Vec::new()))
    );
    assert_eq!(doc.get("volumes").unwrap().entries().len(), 1);
    let settings = [
        ("KAFKA_TOPIC".to_string(), String::new()),
        ("RUST_LOG".to_string(), String::new()),
    ];
    assert_eq!(
        undocumented(&settings, "| `KAFKA_TOPIC` | topic |\n| `RUST_LOG` | logs |"),
        Vec::<String>::new()
    );
    assert_eq!(
        undocumented(&settings, "| `KAFKA_TOPIC_ROUTES` | x |\nRUST_LOG=info"),
        ["KAFKA_TOPIC"]
    );
    assert_eq!(
        substituted_names("a: ${X:-1} ${Y_2:?e} $${Z} $W"),
        BTreeSet::from(["X".into(), "Y_2".into(), "W".into()])
    );
}

/// Every environment variable a binary reads (clap's `[env: NAME]` in `--help`) is listed in
/// `.env.example`, so the file stays the complete list of settings. The binaries are the ones
/// `scripts/test` builds before running the tests.
#[test]
fn env_example_lists_every_setting_the_binaries_accept() {
    let listed: BTreeSet<String> = env_example().into_iter().map(|(n, _)| n).collect();
    let bin_dir = root().join("target/debug");
    let commands: &[(&str, &[&str])] = &[
        ("relay-cdc", &["run", "status", "republish", "migrate"]),
        ("consumer", &["run", "redrive", "migrate"]),
        ("bot", &["run", "console", "migrate"]),
    ];
    let mut missing = BTreeSet::new();
    for (bin, subcommands) in commands {
        let path = bin_dir.join(bin);
        assert!(
            path.exists(),
            "{} is missing: build the workspace first (scripts/test does: cargo build --workspace)",
            path.display()
        );
        for sub in *subcommands {
            let out = Command::new(&path).args([sub, "--help"]).output().unwrap();
            assert!(out.status.success(), "{bin} {sub} --help failed");
            let help = String::from_utf8_lossy(&out.stdout);
            for part in help.split("[env: ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !listed.contains(&name) {
                    missing.insert(format!("{name} ({bin} {sub})"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from .env.example: {missing:?}"
    );
}
