//! Configuration errors. Every variant names *where* the problem is: the file, or the
//! dotted key path inside it (`dbs[0].replica.bucket`).

use std::io;
use std::path::PathBuf;

/// Result alias used across this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from loading or parsing a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file does not exist.
    #[error("config file not found: {}", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },

    /// The configuration file exists but could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The text is not valid YAML (the message carries line and column).
    #[error("invalid YAML: {source}")]
    Yaml {
        /// The parser error.
        #[source]
        source: serde_yaml_ng::Error,
    },

    /// A key that neither Sluice nor Litestream knows, usually a typo.
    #[error("{location}: unknown configuration key{}", suggestion_text(suggestion))]
    UnknownKey {
        /// Dotted path of the key, e.g. `dbs[0].replica.bukket`.
        location: String,
        /// A known key with a similar spelling, if there is one.
        suggestion: Option<String>,
    },

    /// A known key with a value of the wrong type or out of range, or an inconsistent
    /// combination of keys.
    #[error("{location}: {reason}")]
    Invalid {
        /// Dotted path of the key (or of the section for combinations).
        location: String,
        /// What is wrong.
        reason: String,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { location: location.into(), reason: reason.into() }
    }

    /// The dotted key path the error is about, when it is about a key.
    pub fn location(&self) -> Option<&str> {
        match self {
            Error::UnknownKey { location, .. } | Error::Invalid { location, .. } => Some(location),
            _ => None,
        }
    }
}
