//! Hydration settings: a local copy filled in the background, then read instead of the replica.
//!
//! | environment | URI | meaning |
//! |---|---|---|
//! | `SLUICE_HYDRATION_PATH` (`LITESTREAM_HYDRATION_PATH`) | `hydration_path=/path/db` | keep the copy in this file and reuse it at the next open |
//! | `SLUICE_HYDRATION` (`SLUICE_HYDRATION_ENABLED`, `LITESTREAM_HYDRATION_ENABLED`) | `hydration=1` | on (a private temp file, removed on close, unless a path is set); `false` turns it off |

use std::path::PathBuf;

use sluice_engine::read::Hydration;

use crate::error::{Error, Result};

const ENV_ENABLED: [&str; 3] = ["SLUICE_HYDRATION", "SLUICE_HYDRATION_ENABLED", "LITESTREAM_HYDRATION_ENABLED"];
const ENV_PATH: [&str; 2] = ["SLUICE_HYDRATION_PATH", "LITESTREAM_HYDRATION_PATH"];
/// URI parameter: on or off.
pub const URI_ENABLED: &str = "hydration";
/// URI parameter: the kept file.
pub const URI_PATH: &str = "hydration_path";

/// The process default from the environment (through `get`).
pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Hydration> {
    let first =
        |keys: &[&str]| keys.iter().find_map(|k| get(k).filter(|v| !v.trim().is_empty()).map(|v| (k.to_string(), v)));
    resolve(Hydration::Off, first(&ENV_ENABLED), first(&ENV_PATH))
}

/// `base` overridden by a database's URI parameters.
pub fn with_uri(base: &Hydration, param: &impl Fn(&str) -> Option<String>) -> Result<Hydration> {
    let given = |key: &str| param(key).filter(|v| !v.trim().is_empty()).map(|v| (key.to_string(), v));
    resolve(base.clone(), given(URI_ENABLED), given(URI_PATH))
}

/// A path turns hydration on (into that file) unless the switch says off; the switch alone
/// uses a private temp file.
fn resolve(base: Hydration, enabled: Option<(String, String)>, path: Option<(String, String)>) -> Result<Hydration> {
    let on = match &enabled {
        None => None,
        Some((key, value)) => Some(crate::config::parse_bool(value).ok_or_else(|| Error::Config {
            key: key.clone(),
            value: value.clone(),
            reason: "expected true or false".into(),
        })?),
    };
    Ok(match (on, path) {
        (Some(false), _) => Hydration::Off,
        (_, Some((_, p))) => Hydration::Kept(PathBuf::from(p.trim())),
        (Some(true), None) if matches!(base, Hydration::Off) => Hydration::Temp,
        (Some(true), None) | (None, None) => base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lookup;

    #[test]
    fn environment_litestream_names_and_uri() {
        assert_eq!(from_env(&lookup(&[])).unwrap(), Hydration::Off);
        assert_eq!(from_env(&lookup(&[("SLUICE_HYDRATION", "true")])).unwrap(), Hydration::Temp);
        assert_eq!(from_env(&lookup(&[("SLUICE_HYDRATION_PATH", "/h.db")])).unwrap(), Hydration::Kept("/h.db".into()));
        let ls = lookup(&[("LITESTREAM_HYDRATION_ENABLED", "true"), ("LITESTREAM_HYDRATION_PATH", "/l.db")]);
        assert_eq!(from_env(&ls).unwrap(), Hydration::Kept("/l.db".into()));
        let off = lookup(&[("SLUICE_HYDRATION", "false"), ("SLUICE_HYDRATION_PATH", "/h.db")]);
        assert_eq!(from_env(&off).unwrap(), Hydration::Off);

        let base = Hydration::Kept("/h.db".into());
        assert_eq!(with_uri(&base, &lookup(&[])).unwrap(), base);
        assert_eq!(with_uri(&base, &lookup(&[("hydration", "0")])).unwrap(), Hydration::Off);
        assert_eq!(with_uri(&Hydration::Off, &lookup(&[("hydration", "1")])).unwrap(), Hydration::Temp);
        assert_eq!(with_uri(&base, &lookup(&[("hydration", "1")])).unwrap(), base);
        assert_eq!(
            with_uri(&Hydration::Off, &lookup(&[("hydration_path", "/u.db")])).unwrap(),
            Hydration::Kept("/u.db".into())
        );
        let err = from_env(&lookup(&[("SLUICE_HYDRATION", "maybe")])).unwrap_err().to_string();
        assert!(err.contains("SLUICE_HYDRATION") && err.contains("maybe"), "{err}");
    }
}
