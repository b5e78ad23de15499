//! Storage errors: every variant names the operation, the object key and the store.
//!
//! The store is always the *redacted* description (see [`crate::redact_url`]), so no
//! variant can carry an access key, secret key or SAS token into a log line.

use std::error::Error as StdError;
use std::io;

use object_store::client::{HttpError, HttpErrorKind};

/// Result alias used across this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by [`crate::ReplicaClient`] and replica URL parsing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The replica URL (already redacted) could not be parsed.
    #[error("invalid replica URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with secrets removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The replica configuration is inconsistent (e.g. `url` together with `bucket`).
    #[error("invalid replica config: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },

    /// object_store refused to build a client for the store.
    #[error("cannot build a client for replica {store}")]
    Build {
        /// Redacted description of the store.
        store: String,
        /// The builder error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// The object does not exist.
    #[error("{op} {key} in {store}: not found")]
    NotFound {
        /// Operation, e.g. `GET`.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// A create-only put found an existing object with that name.
    #[error("{op} {key} in {store}: object already exists (create-only put)")]
    AlreadyExists {
        /// Operation, e.g. `PUT`.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// The underlying error, if the store reported one.
        #[source]
        source: Option<Box<object_store::Error>>,
    },

    /// A conditional request failed its precondition.
    #[error("{op} {key} in {store}: precondition failed")]
    Precondition {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// 401/403: credentials are missing, wrong or lack permission. Never retried.
    #[error("{op} {key} in {store}: access denied (check credentials and bucket policy)")]
    PermissionDenied {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Any other store failure; `retryable` records the classification made at creation.
    #[error("{op} {key} in {store} failed{}", if *retryable { " (transient)" } else { "" })]
    Store {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// Whether retrying may help (5xx, timeouts, connection resets).
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Setting mtime or permissions on a file-backend replica file failed.
    #[error("{op} on {path} (replica {store}) failed")]
    LocalFile {
        /// Operation, e.g. `set mtime`.
        op: &'static str,
        /// Local filesystem path.
        path: String,
        /// Redacted description of the store.
        store: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// A caller passed an invalid argument (e.g. an inverted byte range).
    #[error("{op} {key} in {store}: {reason}")]
    InvalidArgument {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps an object_store error, classifying it once so callers can branch cheaply.
    /// Classifies an object_store error for a key of this replica (for callers that talk to
    /// the store directly, such as the lease).
    pub fn from_object_store(
        op: &'static str,
        key: impl Into<String>,
        store: &str,
        source: object_store::Error,
    ) -> Self {
        Self::from_store(op, key, store, source)
    }

    pub(crate) fn from_store(
        op: &'static str,
        key: impl Into<String>,
        store: &str,
        source: object_store::Error,
    ) -> Self {
        use object_store::Error as E;
        let (key, store) = (key.into(), store.to_string());
        let retryable = is_transient(&source);
        let (not_found, exists, precondition, denied) = (
            matches!(source, E::NotFound { .. }),
            matches!(source, E::AlreadyExists { .. }),
            matches!(source, E::Precondition { .. }),
            matches!(source, E::PermissionDenied { .. } | E::Unauthenticated { .. }) || denied_status(&source),
        );
        // Boxed: object_store::Error is large and would bloat every Result in the crate.
        let source = Box::new(source);
        if not_found {
            Error::NotFound { op, key, store, source }
        } else if exists {
            Error::AlreadyExists { op, key, store, source: Some(source) }
        } else if precondition {
            Error::Precondition { op, key, store, source }
        } else if denied {
            Error::PermissionDenied { op, key, store, source }
        } else {
            Error::Store { op, key, store, retryable, source }
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when retrying the same request may succeed: 5xx/429, timeouts, connection
    /// failures, transient I/O errors and the testkit's injected transient faults.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. } => *retryable,
            Error::LocalFile { source, .. } => transient_io(source.kind()),
            _ => false,
        }
    }

    /// True for a failed precondition, including a create-only conflict.
    pub fn is_precondition(&self) -> bool {
        matches!(self, Error::Precondition { .. } | Error::AlreadyExists { .. })
    }

    /// True when a create-only put found the name taken.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }
}

/// Walks the source chain of an object_store error looking for evidence that it is transient.
///
/// object_store does not expose the HTTP status of `Generic` errors as a type we can name
/// (`RetryError` lives in a private module), so statuses are recognised from the
/// `"status code: NNN"` text its `RequestError` prints. Transport failures are typed
/// (`HttpError`, `io::Error`) and are matched exactly.
pub(crate) fn is_transient(err: &object_store::Error) -> bool {
    if matches!(err, object_store::Error::JoinError { .. }) {
        return false;
    }
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return transient_http(http.kind());
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && transient_io(io.kind())
        {
            return true;
        }
        if transient_text(&e.to_string()) {
            return true;
        }
        current = e.source();
    }
    false
}

fn transient_http(kind: HttpErrorKind) -> bool {
    // Decode covers a body cut off mid-stream; Unknown is left permanent on purpose.
    matches!(
        kind,
        HttpErrorKind::Connect
            | HttpErrorKind::Request
            | HttpErrorKind::Timeout
            | HttpErrorKind::Interrupted
            | HttpErrorKind::Decode
    )
}

fn transient_io(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        TimedOut
            | Interrupted
            | WouldBlock
            | ConnectionReset
            | ConnectionAborted
            | ConnectionRefused
            | NotConnected
            | BrokenPipe
            | UnexpectedEof
    )
}

/// Recognises 5xx/429 statuses and S3's "200 with an error body" (InternalError, SlowDown).
fn transient_text(text: &str) -> bool {
    if text.contains("SlowDown") || text.contains("InternalError") {
        return true;
    }
    status_code(text).is_some_and(|code| code == 429 || (500..600).contains(&code))
}

/// The HTTP status in object_store's error text ("... status code: 403 Forbidden ..."):
/// its typed status is not reachable from outside the crate for every backend.
fn status_code(text: &str) -> Option<u16> {
    let idx = text.find("status code: ")?;
    let digits: String = text[idx + "status code: ".len()..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// S3 reports a rejected LIST (bad credentials) as a generic error carrying 401/403.
fn denied_status(err: &object_store::Error) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if matches!(status_code(&e.to_string()), Some(401 | 403)) {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: Box<dyn StdError + Send + Sync>) -> object_store::Error {
        object_store::Error::Generic { store: "test", source }
    }

    #[test]
    fn classification() {
        let timeout = generic(Box::new(HttpError::new(HttpErrorKind::Timeout, io::Error::other("slow"))));
        assert!(is_transient(&timeout));
        let reset = generic(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)));
        assert!(is_transient(&reset));
        let s503 = generic("Server returned non-2xx status code: 503 Service Unavailable".into());
        assert!(is_transient(&s503));
        let s400 = generic("Server returned non-2xx status code: 400 Bad Request".into());
        assert!(!is_transient(&s400));
        let denied = Error::from_store(
            "GET",
            "k",
            "s3://b/p",
            object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() },
        );
        assert!(!denied.is_retryable());
        let msg = denied.to_string();
        assert!(msg.contains("GET k in s3://b/p"), "{msg}");
    }
}
