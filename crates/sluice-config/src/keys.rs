//! The key tables behind the unknown-key policy.
//!
//! Litestream parses its YAML with yaml.v2, which ignores unknown keys, so a typo such as
//! `bukket:` silently replicates to the wrong place. Sluice instead classifies every key:
//!
//! | class | meaning | outcome |
//! |---|---|---|
//! | [`Key::Supported`] | Sluice implements it | used |
//! | [`Key::Unsupported`] | a Litestream 0.5 key Sluice does not implement yet | warning, ignored |
//! | [`Key::Legacy`] | a key Litestream itself ignores (v0.3 leftovers, `name`) | warning, ignored |
//! | `age` | encryption; Litestream 0.5 refuses it | error if it has identities/recipients |
//! | anything else | neither Sluice's nor Litestream's | error naming the key |
//!
//! so that a working Litestream config keeps working, and a broken one fails loudly.

/// How a key is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    /// Implemented by Sluice.
    Supported,
    /// Litestream has it; Sluice ignores it with a warning.
    Unsupported,
    /// Litestream ignores it too; Sluice warns so the user can clean it up.
    Legacy,
    /// `age:` encryption settings.
    Age,
}

use Key::*;

/// Top-level keys other than the inline replica settings.
pub(crate) const TOP: &[(&str, Key)] = &[
    ("dbs", Supported),
    ("addr", Supported),
    ("levels", Supported),
    ("snapshot", Supported),
    ("l0-retention", Supported),
    ("l0-retention-check-interval", Supported),
    ("retention", Supported),
    ("logging", Supported),
    ("exec", Supported),
    ("shutdown-sync-timeout", Supported),
    ("shutdown-sync-interval", Supported),
    // Sluice's own: the replica lease's lifetime, the local pending-file budget, the
    // daemon-wide bounds on storage work.
    ("lease-ttl", Supported),
    ("heartbeat-url", Supported),
    ("heartbeat-interval", Supported),
    ("max-pending-size", Supported),
    ("max-concurrent-uploads", Supported),
    ("max-concurrent-compactions", Supported),
    ("socket", Supported),
    ("verify-compaction", Unsupported),
    ("validation", Supported),
    ("mcp-addr", Unsupported),
];

/// Settings shared by the top level (as defaults) and each replica (`ReplicaSettings` in
/// Litestream's `cmd/litestream/main.go`).
pub(crate) const REPLICA_SETTINGS: &[(&str, Key)] = &[
    ("sync-interval", Supported),
    ("max-sync-ltx-files", Supported),
    ("auto-recover", Supported),
    ("validation-interval", Supported),
    ("access-key-id", Supported),
    ("secret-access-key", Supported),
    ("region", Supported),
    ("bucket", Supported),
    ("endpoint", Supported),
    ("force-path-style", Supported),
    ("skip-verify", Supported),
    ("part-size", Supported),
    ("concurrency", Supported),
    ("account-name", Supported),
    ("account-key", Supported),
    ("sas-token", Supported),
    ("age", Age),
    // S3 extras.
    ("sign-payload", Unsupported),
    ("require-content-md5", Unsupported),
    ("storage-class", Unsupported),
    ("sse-customer-algorithm", Unsupported),
    ("sse-customer-key", Unsupported),
    ("sse-customer-key-path", Unsupported),
    ("sse-kms-key-id", Unsupported),
    // SFTP.
    ("host", Unsupported),
    ("user", Unsupported),
    ("password", Unsupported),
    ("key-path", Unsupported),
    ("concurrent-writes", Unsupported),
    ("host-key", Unsupported),
    // WebDAV.
    ("webdav-url", Unsupported),
    ("webdav-username", Unsupported),
    ("webdav-password", Unsupported),
    // NATS.
    ("jwt", Unsupported),
    ("seed", Unsupported),
    ("creds", Unsupported),
    ("nkey", Unsupported),
    ("username", Unsupported),
    ("token", Unsupported),
    ("tls", Unsupported),
    ("root-cas", Unsupported),
    ("client-cert", Unsupported),
    ("client-key", Unsupported),
    ("max-reconnects", Unsupported),
    ("reconnect-wait", Unsupported),
    ("timeout", Unsupported),
];

/// Keys only valid inside a `replica:` block.
pub(crate) const REPLICA_ONLY: &[(&str, Key)] = &[
    ("type", Supported),
    ("url", Supported),
    ("path", Supported),
    ("name", Legacy),
    ("retention", Legacy),
    ("retention-check-interval", Legacy),
    ("snapshot-interval", Legacy),
];

/// Keys of one `dbs:` entry.
pub(crate) const DB: &[(&str, Key)] = &[
    ("path", Supported),
    ("meta-path", Supported),
    ("monitor-interval", Supported),
    ("checkpoint-interval", Supported),
    ("busy-timeout", Supported),
    ("min-checkpoint-page-count", Supported),
    ("truncate-page-n", Supported),
    ("max-sync-wal-bytes", Supported),
    ("restore-if-db-not-exists", Supported),
    ("snapshot", Supported),
    ("replica", Supported),
    ("replicas", Supported),
    // Sluice names for the checkpoint thresholds.
    ("checkpoint-page-threshold", Supported),
    ("checkpoint-hard-limit-pages", Supported),
    ("dir", Supported),
    ("pattern", Supported),
    ("recursive", Supported),
    ("watch", Supported),
    ("meta-dir", Supported),
];

pub(crate) const SOCKET: &[(&str, Key)] = &[("enabled", Supported), ("path", Supported), ("permissions", Supported)];
pub(crate) const SNAPSHOT: &[(&str, Key)] = &[("interval", Supported), ("retention", Supported)];
pub(crate) const LEVEL: &[(&str, Key)] = &[("interval", Supported)];
pub(crate) const RETENTION: &[(&str, Key)] = &[("enabled", Supported)];
pub(crate) const VALIDATION: &[(&str, Key)] = &[("interval", Supported)];
pub(crate) const LOGGING: &[(&str, Key)] =
    &[("level", Supported), ("type", Supported), ("stderr", Supported), ("source", Supported)];
pub(crate) const AGE: &[(&str, Key)] = &[("identities", Supported), ("recipients", Supported)];

/// Looks `key` up in `tables`.
pub(crate) fn classify(key: &str, tables: &[&[(&str, Key)]]) -> Option<Key> {
    tables.iter().flat_map(|t| t.iter()).find(|(k, _)| *k == key).map(|(_, c)| *c)
}

/// The closest known key, if it is close enough to be a likely typo.
pub(crate) fn suggest(key: &str, tables: &[&[(&str, Key)]]) -> Option<String> {
    let limit = (key.len() / 3).clamp(1, 3);
    tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|(k, _)| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_no_duplicates_across_a_section() {
        for tables in [&[TOP, REPLICA_SETTINGS][..], &[REPLICA_SETTINGS, REPLICA_ONLY][..], &[DB][..]] {
            let mut keys: Vec<&str> = tables.iter().flat_map(|t| t.iter()).map(|(k, _)| *k).collect();
            let n = keys.len();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n);
        }
    }

    #[test]
    fn suggests_near_misses_only() {
        let t = &[REPLICA_SETTINGS, REPLICA_ONLY][..];
        assert_eq!(suggest("bukket", t).as_deref(), Some("bucket"));
        assert_eq!(suggest("sync_interval", t).as_deref(), Some("sync-interval"));
        assert_eq!(suggest("frobnicate", t), None);
    }
}
