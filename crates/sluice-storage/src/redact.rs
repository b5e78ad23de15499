//! Removing secrets from URLs before they reach a message, a `Debug` dump or a log line.

use url::Url;

/// Query keys whose values are secrets (compared case-insensitively, as substrings), e.g. the
/// `sig` of an Azure SAS token or an `X-Amz-Credential`.
const SECRET_QUERY_HINTS: &[&str] = &["key", "secret", "token", "sig", "password", "credential", "sas", "auth"];

const REDACTED: &str = "REDACTED";

/// Returns `raw` with any password and secret-looking query values replaced by `REDACTED`.
///
/// Unparsable input is cut at the first `?` and stripped of user info, because we cannot
/// tell which part is secret.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(url) if url.has_host() || url.scheme() == "file" => redact_parsed(url),
        _ => redact_unparsed(raw),
    }
}

fn redact_parsed(mut url: Url) -> String {
    if url.password().is_some() {
        // Cannot fail: the URL has a host, otherwise it could not carry a password.
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = is_secret_key(&k);
                (k.into_owned(), if secret { REDACTED.into() } else { v.into_owned() })
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn redact_unparsed(raw: &str) -> String {
    let without_query = raw.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            // Keep the account/user name, drop anything after ':' (a password).
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => format!("{scheme}://{rest}"),
        },
        None => without_query.to_string(),
    }
}

pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_QUERY_HINTS.iter().any(|hint| key.contains(hint))
}

/// A `Debug` helper that prints whether a secret is set, never its value.
pub(crate) fn secret_marker(value: &Option<String>) -> &'static str {
    match value {
        Some(_) => "<redacted>",
        None => "<unset>",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_secret_query_values() {
        let out = redact_url("s3://AKIA:s3cr3t@bucket/p?endpoint=http://h:9000&secretKey=zz");
        assert!(!out.contains("s3cr3t") && !out.contains("zz"), "{out}");
        assert!(out.contains("endpoint=http"), "{out}");
        let out = redact_url("abs://acct@container/p?sv=2020&sig=SIGSECRET");
        assert!(!out.contains("SIGSECRET"), "{out}");
        assert!(out.contains("acct@container"), "{out}");
        let out = redact_url("s3://a:b:c@@bad?token=secret");
        assert!(!out.contains("secret") && !out.contains(":b"), "{out}");
    }
}
