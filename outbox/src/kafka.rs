//! librdkafka settings shared by the relay and the consumer: the user's extra properties
//! (`RELAY_KAFKA_CONFIG`, `CONSUMER_KAFKA_CONFIG`), kept out of `--help`, logs and `Debug`;
//! what librdkafka was built with; and client callbacks that report a failing broker connection
//! (wrong password, bad certificate) once, clearly, instead of on every reconnect.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::throttle::Throttle;

/// Whether a property's value is a secret: passwords, client secrets, private keys, JAAS and
/// OAUTHBEARER configurations. Such values are never printed.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "jaas",
        "oauthbearer.config",
        "token",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The raw `key=value,...` text of a `*_KAFKA_CONFIG` setting, as clap hands it over. Parsing
/// happens after clap, in [`KafkaConfigArg::resolve`], because clap prints the whole value in
/// its own errors, and this value holds passwords.
#[derive(Clone, Default)]
pub struct KafkaConfigArg(String);

impl FromStr for KafkaConfigArg {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for KafkaConfigArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match parse(&self.0, "") {
            Ok(p) => write!(f, "KafkaConfigArg({p:?})"),
            Err(_) => f.write_str("KafkaConfigArg(<unparsable, hidden>)"),
        }
    }
}

impl KafkaConfigArg {
    /// Parses the value of `setting` (named in errors), refuses the properties in `reserved`
    /// (property, why) and has librdkafka check every name and value.
    pub fn resolve(
        &self,
        setting: &'static str,
        reserved: &[(&str, &str)],
    ) -> Result<KafkaProperties, KafkaConfigError> {
        let props = parse(&self.0, setting)?;
        for (key, _) in &props.0 {
            if let Some((_, why)) = reserved.iter().find(|(r, _)| r.eq_ignore_ascii_case(key)) {
                return Err(KafkaConfigError::Reserved {
                    setting,
                    key: key.clone(),
                    why: why.to_string(),
                });
            }
        }
        props.validate(setting)?;
        Ok(props)
    }
}

/// A bad `*_KAFKA_CONFIG`. The messages never hold a value of a secret property.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("{setting}: entry {index} is not key=value{after} (write a comma inside a value as \\,)")]
    NotKeyValue {
        setting: &'static str,
        index: usize,
        /// `", after sasl.password"`: where the user should look, without the value.
        after: String,
    },
    #[error("{setting}: {key} may not be set here: {why}")]
    Reserved {
        setting: &'static str,
        key: String,
        why: String,
    },
    #[error("{setting}: {message}")]
    Librdkafka {
        setting: &'static str,
        key: String,
        message: String,
    },
}

/// librdkafka properties, in the order given (a later one wins). `Debug` hides secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub Vec<(String, String)>);

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if is_secret(k) {
                m.entry(k, &"<hidden>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl KafkaProperties {
    /// Sets every property on `config`, over what is already there (our defaults).
    pub fn apply_to(&self, config: &mut ClientConfig) {
        for (k, v) in &self.0 {
            config.set(k, v);
        }
    }

    /// Has librdkafka accept each name and value, so a typo fails at startup with one line
    /// naming the property (a secret's value is left out of the message).
    fn validate(&self, setting: &'static str) -> Result<(), KafkaConfigError> {
        for (k, v) in &self.0 {
            let mut c = ClientConfig::new();
            c.set(k, v);
            if let Err(KafkaError::ClientConfig(_, desc, key, _)) = c.create_native_config() {
                let message = if is_secret(&key) {
                    format!("invalid value for {key}")
                } else {
                    desc
                };
                return Err(KafkaConfigError::Librdkafka {
                    setting,
                    key,
                    message,
                });
            }
        }
        Ok(())
    }
}

/// Splits `key=value,key=value`: the first `=` ends the key (values may hold `=`), `\,` is a
/// comma inside a value and `\\` a backslash; blanks around keys and values and empty entries
/// are ignored.
fn parse(s: &str, setting: &'static str) -> Result<KafkaProperties, KafkaConfigError> {
    let mut entries = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '\\')) => entries.last_mut().unwrap().push(n),
                Some(n) => {
                    let e = entries.last_mut().unwrap();
                    e.push('\\');
                    e.push(n);
                }
                None => entries.last_mut().unwrap().push('\\'),
            },
            ',' => entries.push(String::new()),
            c => entries.last_mut().unwrap().push(c),
        }
    }
    let mut props = Vec::new();
    let mut last_key: Option<String> = None;
    for (i, entry) in entries.iter().enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        match entry.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                let k = k.trim().to_string();
                last_key = Some(k.clone());
                props.push((k, v.trim().to_string()));
            }
            _ => {
                return Err(KafkaConfigError::NotKeyValue {
                    setting,
                    index: i + 1,
                    after: last_key.map(|k| format!(", after {k}")).unwrap_or_default(),
                });
            }
        }
    }
    Ok(KafkaProperties(props))
}

/// librdkafka's version and `builtin.features` (ssl, sasl_scram, zstd...).
pub fn librdkafka_build() -> (String, String) {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_default();
    (version, features)
}

/// Logs librdkafka's version and features at debug level (once per process start).
pub fn log_build() {
    let (version, features) = librdkafka_build();
    tracing::debug!(version, features, "librdkafka");
}

/// How long a repeated librdkafka error stays quiet after it was logged.
const REPEAT_QUIET: Duration = Duration::from_secs(60);

/// Client callbacks for a [`rdkafka::ClientContext`]: librdkafka retries a failing broker
/// connection every few seconds and reports each attempt twice (a log line and an error). This
/// logs the first report of each kind, with a hint naming the setting to fix, and then at most
/// one line a minute per kind, with the number of repeats.
pub struct ClientLog {
    /// The setting that holds the client's properties (`RELAY_KAFKA_CONFIG`...).
    setting: &'static str,
    last: Mutex<HashMap<String, Throttle>>,
    auth_failed: Mutex<Option<Instant>>,
}

impl ClientLog {
    pub fn new(setting: &'static str) -> Self {
        Self {
            setting,
            last: Mutex::default(),
            auth_failed: Mutex::default(),
        }
    }

    /// Whether Kafka refused our credentials or TLS handshake within the last `within`.
    pub fn auth_failed_within(&self, within: Duration) -> bool {
        self.auth_failed
            .lock()
            .expect("lock poisoned")
            .is_some_and(|t| t.elapsed() < within)
    }

    /// `Some(repeats)` when a report of `kind` should be logged now.
    fn due(&self, kind: &str) -> Option<u64> {
        let mut last = self.last.lock().expect("lock poisoned");
        last.entry(kind.to_string())
            .or_insert_with(|| Throttle::new(REPEAT_QUIET))
            .allow()
    }

    /// For [`rdkafka::ClientContext::error`].
    pub fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let hint = match code {
            Some(RDKafkaErrorCode::Authentication) => {
                *self.auth_failed.lock().expect("lock poisoned") = Some(Instant::now());
                format!(
                    "Kafka refused the credentials: check sasl.mechanism, sasl.username and \
                     sasl.password in {}",
                    self.setting
                )
            }
            Some(RDKafkaErrorCode::SSL) => {
                *self.auth_failed.lock().expect("lock poisoned") = Some(Instant::now());
                format!(
                    "the TLS handshake with Kafka failed: check security.protocol and \
                     ssl.ca.location in {}",
                    self.setting
                )
            }
            Some(RDKafkaErrorCode::AllBrokersDown) | Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                // The relay and consumer report unreachable brokers themselves, with their retries.
                tracing::debug!(error = %error, reason, "librdkafka");
                return;
            }
            _ => "librdkafka reported an error".to_string(),
        };
        let kind = format!("error:{code:?}");
        if let Some(repeats) = self.due(&kind) {
            if repeats == 0 {
                tracing::error!(reason, "{hint}");
            } else {
                tracing::error!(reason, repeats, "{hint} (still failing)");
            }
        }
    }

    /// For [`rdkafka::ClientContext::log`]: warnings and errors are throttled per facility
    /// (the error callback already reports failures); the rest goes to debug.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error | Warning => {
                let kind = format!("log:{fac}");
                match self.due(&kind) {
                    Some(0) => tracing::warn!(target: "librdkafka", facility = fac, "{message}"),
                    Some(repeats) => {
                        tracing::warn!(target: "librdkafka", facility = fac, repeats, "{message}")
                    }
                    None => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
                }
            }
            Notice | Info => tracing::info!(target: "librdkafka", facility = fac, "{message}"),
            Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }
}

/// A client context that only logs, through [`ClientLog`] (admin clients, start-up checks).
pub struct LogContext(pub ClientLog);

impl rdkafka::ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(s: &str) -> KafkaConfigArg {
        s.parse().unwrap()
    }

    #[test]
    fn properties_parse_escapes_and_equals_in_values() {
        let p = arg(r" security.protocol = SASL_SSL, sasl.password=a=b\,c\\d ,, sasl.username=u")
            .resolve("X", &[])
            .unwrap();
        assert_eq!(
            p.0,
            [
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.password".to_string(), r"a=b,c\d".to_string()),
                ("sasl.username".to_string(), "u".to_string()),
            ]
        );
        assert_eq!(arg("").resolve("X", &[]).unwrap(), KafkaProperties::default());
    }

    #[test]
    fn bad_entries_name_the_place_never_the_value() {
        // An unescaped comma inside a password leaves a fragment that is not key=value.
        let e = arg("sasl.username=u,sasl.password=ab,cd-secret")
            .resolve("RELAY_KAFKA_CONFIG", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RELAY_KAFKA_CONFIG: entry 3"), "{e}");
        assert!(e.contains("after sasl.password"), "{e}");
        assert!(!e.contains("cd-secret"), "{e}");
        let e = arg("=x").resolve("X", &[]).unwrap_err().to_string();
        assert!(e.contains("entry 1 is not key=value"), "{e}");
    }

    #[test]
    fn librdkafka_names_a_bad_property() {
        let e = arg("sasl.pasword=hunter2")
            .resolve("RELAY_KAFKA_CONFIG", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("No such configuration property") && e.contains("sasl.pasword"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = arg("security.protocol=SASL_SSSL")
            .resolve("X", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("security.protocol"), "{e}");
    }

    #[test]
    fn reserved_properties_are_refused_with_the_reason() {
        let e = arg("ACKS=1")
            .resolve("RELAY_KAFKA_CONFIG", &[("acks", "the relay needs acks=all")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "RELAY_KAFKA_CONFIG: ACKS may not be set here: the relay needs acks=all"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let a = arg(
            "sasl.username=alice,sasl.password=pw1,ssl.key.password=pw2,ssl.key.pem=PEMDATA,\
             ssl.keystore.password=pw3,sasl.oauthbearer.config=principal=x pw4",
        );
        let shown = format!("{a:?} {:?}", a.resolve("X", &[]).unwrap());
        for secret in ["pw1", "pw2", "PEMDATA", "pw3", "pw4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn librdkafka_is_built_with_tls_sasl_and_zstd() {
        let (version, features) = librdkafka_build();
        let features: Vec<&str> = features.split(',').collect();
        for f in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "zstd",
            "lz4",
        ] {
            assert!(
                features.contains(&f),
                "librdkafka {version} lacks {f}: {features:?}"
            );
        }
    }
}
