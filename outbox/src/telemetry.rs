//! Logging for the binaries, on stderr: `RUST_LOG` filters (default `info`, sqlx notices
//! hidden); `LOG_FORMAT=text` (the default) prints human-readable lines, coloured only when
//! stderr is a terminal (and `NO_COLOR` is unset), `LOG_FORMAT=json` one JSON object per line
//! (timestamp, level, target, fields, current span) for log collectors.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// The variable that picks the log format.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

static JSON: AtomicBool = AtomicBool::new(false);

/// The line a binary ends with when it fails: as it is on stderr, or as a JSON `ERROR` record
/// under `LOG_FORMAT=json`, so that every line of the stream parses.
pub fn fatal(line: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::error!("{line}");
    } else {
        eprintln!("{line}");
    }
}

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let format = std::env::var(LOG_FORMAT).unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim().to_ascii_lowercase().as_str() {
        "json" => {
            JSON.store(true, Ordering::Relaxed);
            let _ = builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .try_init();
        }
        other => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let _ = builder.with_ansi(ansi).try_init();
            if !other.is_empty() && other != "text" {
                tracing::warn!("{LOG_FORMAT}={other:?} is neither `text` nor `json`; logging text");
            }
        }
    }
}
