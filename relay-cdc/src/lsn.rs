//! WAL positions, shared by the pgoutput codec and the replication client.

use std::fmt;
use std::str::FromStr;

/// A WAL position (`pg_lsn`, `XLogRecPtr`). Ordered like the WAL, so "confirmed up to" is a `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `InvalidXLogRecPtr`: the server's "no position" (e.g. a slot that never confirmed).
    pub const INVALID: Lsn = Lsn(0);
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

/// PostgreSQL's own text form (`%X/%X`, unpadded, as PG 15 prints it), so logs and SQL agree.
impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers of 1 to 8 digits, as in 16/B374D848")]
pub struct ParseLsnError(String);

/// Accepts what `pg_lsn` accepts: `hi/lo`, 1-8 hex digits each, either case, zero padding allowed.
impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let half = |part: &str| {
            // from_str_radix alone would also take a sign.
            if (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                u32::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        s.split_once('/')
            .and_then(|(hi, lo)| Some((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
            .map(Lsn)
            .ok_or_else(|| ParseLsnError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x63D_90F8).to_string(), "0/63D90F8");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parses_postgres_forms() {
        assert_eq!("16/b374d848".parse(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("00000016/0063D90F".parse(), Ok(Lsn(0x16_0063_D90F)));
        assert_eq!("0/0".parse(), Ok(Lsn::INVALID));
        for bad in [
            "",
            "1",
            "1/",
            "/1",
            "1/2/3",
            "g/1",
            "+1/1",
            "1/-1",
            "123456789/0",
            " 1/1",
            "1/1 ",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "x".parse::<Lsn>().unwrap_err().to_string(),
            "invalid LSN \"x\": expected two hex numbers of 1 to 8 digits, as in 16/B374D848"
        );
    }

    #[test]
    fn orders_like_the_wal() {
        assert!(Lsn(0xFFFF_FFFF) < "1/0".parse().unwrap());
    }

    proptest! {
        #[test]
        fn display_round_trips(v in any::<u64>()) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>(), Ok(Lsn(v)));
        }
    }
}
