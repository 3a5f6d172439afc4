//! Rate-limited logging for loops: a retry or drain loop may go round thousands of times a
//! second, its log must not. A [`Throttle`] lets one line through per interval and counts the
//! lines it held back, so the next line says how many there were.

use std::time::{Duration, Instant};

/// At most one line per `every`; the rest are counted.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: write the line now, `n` lines were held back since the last one written.
    /// `None`: hold this one back (it is counted).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `tracing::warn!` at most once per `$every` (a `Duration`) for this call site, with a
/// `suppressed` field counting the lines held back since the last one:
/// `warn_throttled!(Duration::from_secs(5), error = %e, "marking rows sent failed; retrying")`.
#[macro_export]
macro_rules! warn_throttled {
    ($every:expr, $($arg:tt)+) => {{
        static THROTTLE: ::std::sync::Mutex<$crate::throttle::Throttle> =
            ::std::sync::Mutex::new($crate::throttle::Throttle::new($every));
        let allowed = THROTTLE.lock().unwrap_or_else(|p| p.into_inner()).allow();
        if let Some(suppressed) = allowed {
            $crate::throttle::__tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let mut t = Throttle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0));
        let held = (0..1000).filter(|_| t.allow().is_none()).count();
        assert_eq!(held, 1000);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.allow(), Some(1000));
        assert_eq!(t.allow(), None);
    }
}
