//! Transaction IDs and LTX file names.
//!
//! A Litestream TXID counts syncs, not SQLite transactions. It is shown and parsed
//! as exactly 16 lower-case hex digits, the form used in file names.

use std::fmt;
use std::str::FromStr;

/// A transaction ID: never zero in a valid file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u64);

impl TxId {
    /// The TXID as a raw integer.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Error returned when a string is not 16 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TXID {0:?}: expected exactly 16 lower-case hex digits, e.g. 000000000000002a")]
pub struct ParseTxIdError(pub String);

impl FromStr for TxId {
    type Err = ParseTxIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(ParseTxIdError(s.to_string()));
        }
        u64::from_str_radix(s, 16).map(TxId).map_err(|_| ParseTxIdError(s.to_string()))
    }
}

/// `<min>-<max>.ltx`, each 16 lower-case hex digits (Litestream's `FormatFilename`).
pub fn format_filename(min: TxId, max: TxId) -> String {
    format!("{min}-{max}.ltx")
}

/// Parses `<min>-<max>.ltx`; any other name returns `None` (Litestream ignores such files).
pub fn parse_filename(name: &str) -> Option<(TxId, TxId)> {
    let stem = name.strip_suffix(".ltx")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_round_trip_and_strictness() {
        let t: TxId = "000000000000002a".parse().unwrap();
        assert_eq!(t, TxId(42));
        assert_eq!(t.to_string(), "000000000000002a");
        assert!("2a".parse::<TxId>().is_err());
        assert!("000000000000002A".parse::<TxId>().is_err());
        assert!("+00000000000002a".parse::<TxId>().is_err());
    }

    #[test]
    fn filenames() {
        let name = format_filename(TxId(1), TxId(0x33));
        assert_eq!(name, "0000000000000001-0000000000000033.ltx");
        assert_eq!(parse_filename(&name), Some((TxId(1), TxId(0x33))));
        assert_eq!(parse_filename("0000000000000001-0000000000000033.ltx.tmp"), None);
        assert_eq!(parse_filename("x-y.ltx"), None);
    }
}
