//! The connection settings of a `postgres://` URL, as the replication connection uses them.

use percent_encoding::percent_decode_str;
use url::Url;

use super::ReplicationError;

/// What the startup packet and the TCP connection need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub application_name: String,
}

impl ConnectParams {
    /// Parses `postgres[ql]://user[:password]@host[:port][/database][?params]` as libpq would,
    /// with `PGPASSWORD` as the fallback password. TLS is not implemented: an `sslmode` that
    /// requires it is refused here rather than silently ignored.
    pub fn parse(database_url: &str) -> Result<Self, ReplicationError> {
        let bad = |why: String| ReplicationError::Config(why);
        let url = Url::parse(database_url).map_err(|e| bad(format!("invalid database URL: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!(
                "database URL scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            )));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => "localhost".to_owned(),
        };
        let user = decode(url.username());
        if user.is_empty() {
            return Err(bad("the database URL names no user".into()));
        }
        let password = url
            .password()
            .map(decode)
            .or_else(|| std::env::var("PGPASSWORD").ok());
        let database = match decode(url.path().trim_start_matches('/')) {
            d if d.is_empty() => user.clone(),
            d => d,
        };
        let mut application_name = "relay-cdc".to_owned();
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" if !matches!(&*value, "disable" | "allow" | "prefer") => {
                    return Err(bad(format!(
                        "sslmode={value} is not supported: the replication connection speaks plain TCP only"
                    )));
                }
                "application_name" => application_name = value.into_owned(),
                _ => {}
            }
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database,
            application_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url_with_escapes() {
        let p = ConnectParams::parse(
            "postgres://re%40lay:p%3Ass%2Fw@127.0.0.1:55432/bot_game_test?sslmode=prefer&application_name=r1",
        )
        .unwrap();
        assert_eq!(
            p,
            ConnectParams {
                host: "127.0.0.1".into(),
                port: 55432,
                user: "re@lay".into(),
                password: Some("p:ss/w".into()),
                database: "bot_game_test".into(),
                application_name: "r1".into(),
            }
        );
    }

    #[test]
    fn defaults_like_libpq() {
        let p = ConnectParams::parse("postgresql://relay:pw@db").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.database.as_str()),
            ("db", 5432, "relay")
        );
        let p = ConnectParams::parse("postgres://relay:pw@[::1]:6000/x").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 6000));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for url in [
            "mysql://u:p@h/db",
            "postgres://h/db",
            "postgres://u:p@h/db?sslmode=require",
            "postgres://u:p@h/db?sslmode=verify-full",
            "not a url",
        ] {
            assert!(
                matches!(ConnectParams::parse(url), Err(ReplicationError::Config(_))),
                "{url} accepted"
            );
        }
    }
}
