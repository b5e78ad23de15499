//! Litestream spells long flags with one dash (`-txid`, `-config`); Sluice uses GNU style
//! (`--txid`). Rewriting the known single-dash long names lets Litestream scripts run unchanged.

/// Long flag names accepted with a single dash, Litestream style.
const LONG_FLAGS: &[&str] = &[
    "config",
    "no-expand-env",
    "txid",
    "timestamp",
    "parallelism",
    "if-db-not-exists",
    "if-replica-exists",
    "dry-run",
    "force",
    "exec",
    "log-level",
    "level",
    "json",
    "once",
    "follow-interval",
    "integrity-check",
    "socket",
    "timeout",
    "replica",
    "wait",
];

/// Rewrites `-name` / `-name=value` to `--name…` for the names above; leaves everything else.
pub fn normalize<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest_literal = false;
    for a in args {
        if rest_literal || a == "--" {
            rest_literal = true;
            out.push(a);
            continue;
        }
        let rewritten = a.strip_prefix('-').filter(|s| !s.starts_with('-')).and_then(|s| {
            let name = s.split_once('=').map_or(s, |(n, _)| n);
            LONG_FLAGS.contains(&name).then(|| format!("--{s}"))
        });
        out.push(rewritten.unwrap_or(a));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_known_long_flags() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize(v(&[
                "sluice",
                "restore",
                "-txid",
                "0000000000000002",
                "-o",
                "x.db",
                "-config=/c.yml",
                "--",
                "-txid"
            ])),
            v(&["sluice", "restore", "--txid", "0000000000000002", "-o", "x.db", "--config=/c.yml", "--", "-txid"])
        );
    }
}
