//! Database path normalisation, as Litestream's `expand()`: strip `sqlite://` and
//! `sqlite3://`, expand `~` and `~/`, make absolute against the current directory, and
//! clean lexically like Go's `filepath.Abs` (so `a/../b.db` is `b.db`; symlinks are kept).

use std::path::{Component, Path, PathBuf};

use crate::expand::EnvLookup;

/// Normalises a configured path; `env` supplies `HOME` for `~`.
pub(crate) fn normalize(raw: &str, env: EnvLookup<'_>) -> Result<PathBuf, String> {
    let raw = raw.strip_prefix("sqlite3://").or_else(|| raw.strip_prefix("sqlite://")).unwrap_or(raw);
    if raw.is_empty() {
        return Err("path is empty".into());
    }
    let path = if raw == "~" || raw.starts_with("~/") {
        let home = env("HOME").filter(|h| !h.is_empty()).ok_or("cannot expand `~`: HOME is not set")?;
        Path::new(&home).join(raw[1..].trim_start_matches('/'))
    } else {
        PathBuf::from(raw)
    };
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir().map_err(|e| format!("cannot resolve relative path: {e}"))?.join(path)
    };
    Ok(clean(&path))
}

/// Lexical cleaning: drops `.` components and resolves `..` against the parent.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                // `/..` is `/`, as in Go.
                if !matches!(out.components().next_back(), None | Some(Component::RootDir)) {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The identity used to match a database path: canonical when the file (or at least its
/// directory) exists, otherwise the cleaned absolute path.
pub(crate) fn identity(path: &Path) -> PathBuf {
    let abs = match std::path::absolute(path) {
        Ok(p) => clean(&p),
        Err(_) => path.to_path_buf(),
    };
    if let Ok(canonical) = abs.canonicalize() {
        return canonical;
    }
    match (abs.parent().and_then(|d| d.canonicalize().ok()), abs.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => abs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/sam".to_string())
    }

    fn norm(raw: &str) -> PathBuf {
        normalize(raw, &env).expect(raw)
    }

    #[test]
    fn normalises_like_litestream() {
        assert_eq!(norm("/var/lib/app.db"), PathBuf::from("/var/lib/app.db"));
        assert_eq!(norm("sqlite:///var/lib/app.db"), PathBuf::from("/var/lib/app.db"));
        assert_eq!(norm("sqlite3:///var/lib/app.db"), PathBuf::from("/var/lib/app.db"));
        assert_eq!(norm("~/data/app.db"), PathBuf::from("/home/sam/data/app.db"));
        assert_eq!(norm("~"), PathBuf::from("/home/sam"));
        assert_eq!(norm("/var/./lib/../app.db"), PathBuf::from("/var/app.db"));
        assert_eq!(norm("/../app.db"), PathBuf::from("/app.db"));
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(norm("data/app.db"), cwd.join("data/app.db"));
        // `~user` is not expanded (neither does Litestream).
        assert_eq!(norm("~sam/app.db"), cwd.join("~sam/app.db"));
    }

    #[test]
    fn rejects_empty_and_homeless() {
        assert!(normalize("", &env).is_err());
        assert!(normalize("sqlite://", &env).is_err());
        assert!(normalize("~/x.db", &|_| None).is_err());
    }
}
