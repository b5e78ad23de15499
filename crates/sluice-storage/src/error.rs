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

    /// 401/403, or no credentials at all: missing, rejected, or lacking permission. Never
    /// retried: no retry can fix it.
    #[error("{op} {key} in {store}: {denial}")]
    PermissionDenied {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// Which of the three it is.
        denial: Denial,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// The bucket (or container) does not exist. Never retried.
    #[error("{op} {key} in {store}: the bucket does not exist (create it, or check the bucket name and region)")]
    BucketNotFound {
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
    #[error("{op} {key} in {store} failed: {cause}{}", if *retryable { " (transient)" } else { "" })]
    Store {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Redacted description of the store.
        store: String,
        /// What went wrong, as far as the error tells.
        cause: Cause,
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
        let text = chain_text(&source);
        let retryable = is_transient(&source);
        // The credential provider failing comes first: the request never left, so whatever
        // else the error says (a refused connection, a 403 from a metadata proxy) is not
        // about the endpoint.
        let denial = if credentials_missing(&text) {
            Some(Denial::MissingCredentials)
        } else if matches!(source, E::PermissionDenied { .. } | E::Unauthenticated { .. })
            || matches!(status_code(&text), Some(401 | 403))
        {
            Some(Denial::from_text(&text))
        } else {
            None
        };
        let missing_bucket = BUCKET_MISSING.iter().any(|c| text.contains(c));
        let (not_found, exists, precondition) = (
            matches!(source, E::NotFound { .. }),
            matches!(source, E::AlreadyExists { .. }),
            matches!(source, E::Precondition { .. }),
        );
        // Boxed: object_store::Error is large and would bloat every Result in the crate.
        let source = Box::new(source);
        if let Some(denial) = denial {
            Error::PermissionDenied { op, key, store, denial, source }
        } else if missing_bucket {
            Error::BucketNotFound { op, key, store, source }
        } else if not_found {
            Error::NotFound { op, key, store, source }
        } else if exists {
            Error::AlreadyExists { op, key, store, source: Some(source) }
        } else if precondition {
            Error::Precondition { op, key, store, source }
        } else {
            Error::Store { op, key, store, cause: Cause::from_text(&text), retryable, source }
        }
    }

    /// True for errors no retry can fix (a replicating daemon stops on these and only
    /// these): bad URL or config, missing or rejected credentials, a missing bucket.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::InvalidUrl { .. }
                | Error::InvalidConfig { .. }
                | Error::Build { .. }
                | Error::PermissionDenied { .. }
                | Error::BucketNotFound { .. }
        )
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

/// Every message of an error's source chain, joined: object_store wraps the HTTP client's
/// errors, and the telling part (a status, an S3 error code, "dns error") may be deep in it.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut current = Some(err);
    while let Some(e) = current {
        out.push_str(&e.to_string());
        out.push('\n');
        current = e.source();
    }
    out
}

/// Error codes of stores saying the bucket or container does not exist.
const BUCKET_MISSING: &[&str] = &["NoSuchBucket", "ContainerNotFound", "The specified bucket does not exist"];

/// The credential provider failed: the instance metadata services (EC2, ECS, GCE) are what
/// object_store asks when no credentials are configured.
fn credentials_missing(text: &str) -> bool {
    ["/latest/api/token", "/latest/meta-data/", "169.254.170.2", "metadata.google.internal", "computeMetadata"]
        .iter()
        .any(|h| text.contains(h))
}

/// Why a request was denied; each has its own message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No credentials configured, and none from an instance metadata service.
    MissingCredentials,
    /// The store does not know the key, or the signature or token does not match.
    CredentialsRejected,
    /// Valid credentials without permission for the request.
    AccessDenied,
}

impl Denial {
    fn from_text(text: &str) -> Denial {
        const REJECTED: &[&str] = &[
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
            "InvalidClientTokenId",
            "AuthenticationFailed",
            "invalid_grant",
            "401 Unauthorized",
        ];
        if REJECTED.iter().any(|c| text.contains(c)) { Denial::CredentialsRejected } else { Denial::AccessDenied }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Denial::MissingCredentials => {
                "no credentials: none configured (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the replica's \
                 access-key-id and secret-access-key) and no instance metadata service provided any"
            }
            Denial::CredentialsRejected => {
                "credentials rejected by the store (unknown access key, wrong secret or expired token)"
            }
            Denial::AccessDenied => "access denied: the credentials lack permission (check the bucket policy)",
        })
    }
}

/// What made a request fail, for errors that are neither denials nor missing objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the endpoint.
    ConnectionRefused,
    /// The endpoint's host name did not resolve.
    Dns,
    /// The TLS handshake failed (an `https` URL for a plain-HTTP endpoint, a bad certificate).
    Tls,
    /// The request or connection timed out.
    Timeout,
    /// Some other connection failure (reset, closed, unreachable network).
    Connection,
    /// The store asked to slow down (429, S3's SlowDown).
    Throttled,
    /// The store failed (a 5xx status).
    Server(u16),
    /// The store refused the request with a 4xx status that is not a denial, a missing object
    /// or a failed precondition (e.g. a service or emulator that lacks an API Sluice uses).
    /// Named so logs show the status instead of a bare "request failed".
    Rejected(u16),
    /// Anything else (the source error says more).
    Other,
}

impl Cause {
    fn from_text(text: &str) -> Cause {
        let lower = text.to_ascii_lowercase();
        let code = status_code(text);
        if text.contains("SlowDown") || code == Some(429) {
            Cause::Throttled
        } else if let Some(c) = code.filter(|c| (500..600).contains(c)) {
            Cause::Server(c)
        } else if let Some(c) = code.filter(|c| (400..500).contains(c)) {
            Cause::Rejected(c)
        } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
            Cause::Dns
        } else if lower.contains("connection refused") {
            Cause::ConnectionRefused
        } else if ["tls", "certificate", "invalidcontenttype", "corrupt message", "handshake"]
            .iter()
            .any(|w| lower.contains(w))
        {
            Cause::Tls
        } else if lower.contains("timed out") || lower.contains("timeout") {
            Cause::Timeout
        } else if ["connection", "connect", "broken pipe", "network is unreachable"].iter().any(|w| lower.contains(w)) {
            Cause::Connection
        } else {
            Cause::Other
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::ConnectionRefused => f.write_str("endpoint unreachable (connection refused)"),
            Cause::Dns => f.write_str("DNS lookup of the endpoint's host failed"),
            Cause::Tls => f.write_str(
                "TLS handshake with the endpoint failed (https to a plain-HTTP endpoint, or a bad certificate?)",
            ),
            Cause::Timeout => f.write_str("timed out"),
            Cause::Connection => f.write_str("connection to the endpoint failed"),
            Cause::Throttled => f.write_str("throttled by the store (slow down)"),
            Cause::Server(code) => write!(f, "store error (HTTP {code})"),
            Cause::Rejected(code) => write!(f, "the store rejected the request (HTTP {code})"),
            Cause::Other => f.write_str("request failed"),
        }
    }
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
        assert!(!denied.is_retryable() && denied.is_permanent());
        let msg = denied.to_string();
        assert!(msg.contains("GET k in s3://b/p"), "{msg}");
    }

    fn classify(text: &str) -> Error {
        Error::from_store("LIST", "p/0000", "s3://b/p", generic(text.to_string().into()))
    }

    /// Each cause has its own message, and only denials and missing buckets are permanent.
    /// Texts as object_store prints them (seen against moto and closed ports).
    #[test]
    fn every_cause_has_its_own_message() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "Error performing GET http://127.0.0.1:1/b - HTTP error: error sending request: client error (Connect): \
                 tcp connect error: Connection refused (os error 111)",
                "endpoint unreachable (connection refused)",
                false,
            ),
            (
                "HTTP error: client error (Connect): dns error: failed to lookup address information: Name or service not known",
                "DNS lookup of the endpoint's host failed",
                false,
            ),
            (
                "HTTP error: error sending request: client error (Connect): received corrupt message of type InvalidContentType",
                "TLS handshake with the endpoint failed",
                false,
            ),
            (
                "Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>",
                "throttled by the store",
                false,
            ),
            ("Server returned non-2xx status code: 429 Too Many Requests", "throttled by the store", false),
            ("Server returned non-2xx status code: 500 Internal Server Error", "store error (HTTP 500)", false),
            // fake-gcs-server's answer to an XML API upload (object_store's GCS PUT).
            (
                "Error performing PUT http://127.0.0.1:4443/b/db%2Fsluice%2Dlease%2Ejson in 1ms - Server returned \
                 non-2xx status code: 400 Bad Request: {\"error\":{\"code\":400,\"message\":\"invalid uploadType\"}}",
                "the store rejected the request (HTTP 400)",
                false,
            ),
            (
                "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>",
                "the bucket does not exist",
                true,
            ),
            (
                "Server returned non-2xx status code: 403 Forbidden: <Error><Code>InvalidAccessKeyId</Code></Error>",
                "credentials rejected by the store",
                true,
            ),
            (
                "Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>",
                "access denied: the credentials lack permission",
                true,
            ),
            (
                "Error performing PUT http://169.254.169.254/latest/api/token - Server returned non-2xx status code: 403",
                "no credentials: none configured",
                true,
            ),
            (
                "Error performing PUT http://169.254.169.254/latest/api/token - HTTP error: client error (Connect): \
                 tcp connect error: Connection refused (os error 111)",
                "no credentials: none configured",
                true,
            ),
        ];
        for (text, message, permanent) in cases {
            let e = classify(text);
            assert!(e.to_string().contains(message), "{text:?} gave {e}");
            assert_eq!(e.is_permanent(), *permanent, "{text:?}: {e}");
            assert!(e.to_string().starts_with("LIST p/0000 in s3://b/p"), "{e}");
        }
    }
}
