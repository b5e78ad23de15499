//! A typed view over one YAML mapping, carrying its dotted location for messages.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::error::{Error, Result};
use crate::keys::{self, Key};
use crate::units;

/// Follows YAML tags (`!!str 5`) to the tagged value.
pub(crate) fn untag(mut value: &Value) -> &Value {
    while let Value::Tagged(t) = value {
        value = &t.value;
    }
    value
}

/// Joins a parent location and a key: `dbs[0]` + `path` = `dbs[0].path`.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// One mapping (or an absent/null one, which reads as empty) and where it is.
pub(crate) struct Section<'a> {
    map: Option<&'a Mapping>,
    pub loc: String,
}

impl<'a> Section<'a> {
    /// A section from a value that must be a mapping or null.
    pub fn new(value: Option<&'a Value>, loc: String) -> Result<Self> {
        match value.map(untag) {
            None | Some(Value::Null) => Ok(Section { map: None, loc }),
            Some(Value::Mapping(map)) => Ok(Section { map: Some(map), loc }),
            Some(other) => Err(Error::invalid(loc, format!("expected a mapping, found {}", kind(other)))),
        }
    }

    /// Location of `key` inside this section.
    pub fn at(&self, key: &str) -> String {
        join(&self.loc, key)
    }

    /// Classifies every key against `tables` (see [`crate::keys`]): unknown keys are an
    /// error, unsupported and legacy ones add a warning.
    pub fn check(&self, tables: &[&[(&str, Key)]], warnings: &mut Vec<String>) -> Result<()> {
        for (k, _) in self.map.into_iter().flatten() {
            let Some(name) = untag(k).as_str() else {
                let shown = serde_yaml_ng::to_string(k).unwrap_or_default();
                return Err(Error::UnknownKey { location: self.at(shown.trim()), suggestion: None });
            };
            let loc = self.at(name);
            match keys::classify(name, tables) {
                Some(Key::Supported) => {}
                Some(Key::Unsupported) => {
                    warnings.push(format!("{loc}: Litestream setting not supported by Sluice yet; ignored"));
                }
                Some(Key::Legacy) => {
                    warnings.push(format!("{loc}: obsolete setting (Litestream 0.5 ignores it too); ignored"));
                }
                Some(Key::Age) => self.check_age(name, warnings)?,
                None => return Err(Error::UnknownKey { location: loc, suggestion: keys::suggest(name, tables) }),
            }
        }
        Ok(())
    }

    fn check_age(&self, key: &str, warnings: &mut Vec<String>) -> Result<()> {
        let age = self.section(key)?;
        age.check(&[keys::AGE], warnings)?;
        let used = ["identities", "recipients"].iter().any(|k| match age.get(k) {
            Some(Value::Sequence(items)) => !items.is_empty(),
            Some(_) => true,
            None => false,
        });
        if used {
            return Err(Error::invalid(
                age.loc,
                "age encryption is not supported (Litestream 0.5 rejects it as well, since it would \
                 upload plaintext); remove the `age` block",
            ));
        }
        warnings.push(format!("{}: empty age encryption block; ignored", age.loc));
        Ok(())
    }

    /// The value of `key`, treating an explicit null as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).map(untag).filter(|v| !v.is_null())
    }

    /// The nested mapping at `key` (empty when absent).
    pub fn section(&self, key: &str) -> Result<Section<'a>> {
        Section::new(self.get(key), self.at(key))
    }

    /// The sequence at `key`.
    pub fn seq(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Sequence(items)) => Ok(Some(items)),
            Some(other) => Err(self.wrong(key, "a list", other)),
        }
    }

    /// A string; numbers and booleans are taken as written, as yaml.v2 does.
    pub fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    /// A boolean; also the YAML 1.1 spellings yaml.v2 accepts (`yes`, `off`, …).
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "True" | "TRUE" => Ok(Some(true)),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "False" | "FALSE" => Ok(Some(false)),
                _ => Err(Error::invalid(self.at(key), format!("expected true or false, found {s:?}"))),
            },
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    /// A Go-style duration (`500ms`, `1h30m`); a bare `0` is zero.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>> {
        let text = match self.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(self.wrong(key, "a duration such as 1s or 1h30m", other)),
        };
        units::parse_duration(&text).map(Some).map_err(|reason| Error::invalid(self.at(key), reason))
    }

    /// A non-negative integer (a quoted one is accepted too).
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(other) => Err(self.wrong(key, "a non-negative integer", other)),
        }
    }

    /// A byte size: integer bytes or `64MB`/`64MiB`.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let text = match self.get(key) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(self.wrong(key, "a size such as 1048576 or 64MB", other)),
        };
        units::parse_size(&text).map(Some).map_err(|reason| Error::invalid(self.at(key), reason))
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> Error {
        let found = match found {
            Value::String(s) => format!("{s:?}"),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => kind(other).to_string(),
        };
        Error::invalid(self.at(key), format!("expected {expected}, found {found}"))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
