//! Replica key layout, exactly as Litestream 0.5 writes it.
//!
//! ```text
//! file, gs, abs:  <prefix>/ltx/<L decimal>/<min>-<max>.ltx     e.g. db/ltx/9/0000000000000001-00000000000000ff.ltx
//! s3:             <prefix>/<L as %04x>/<min>-<max>.ltx         e.g. db/0009/0000000000000001-00000000000000ff.ltx
//! ```
//!
//! S3 has no `ltx/` component (Litestream's `s3/replica_client.go`); mixing the two up makes a
//! replica invisible to the other implementation, so both forms are pinned by tests.

use object_store::path::Path;
use sluice_ltx::{TxId, format_filename, parse_filename};

use crate::url::StoreKind;

/// Level that holds full snapshots.
pub const SNAPSHOT_LEVEL: u8 = 9;

/// Directory (key prefix) of level `level` under `prefix`.
pub fn level_dir(kind: StoreKind, prefix: &Path, level: u8) -> Path {
    match kind {
        StoreKind::S3 => prefix.clone().join(format!("{level:04x}")),
        StoreKind::File | StoreKind::Gcs | StoreKind::Azure => prefix.clone().join("ltx").join(level.to_string()),
    }
}

/// Key of the LTX file covering `min..=max` at `level`.
pub fn file_key(kind: StoreKind, prefix: &Path, level: u8, min: TxId, max: TxId) -> Path {
    level_dir(kind, prefix, level).join(format_filename(min, max))
}

/// Parses a listed key that must sit directly in `dir`; anything else (foreign names, nested
/// keys, object_store staging files like `name#1`) yields `None`, as in Litestream.
pub(crate) fn parse_key(dir: &Path, key: &Path) -> Option<(TxId, TxId)> {
    let mut rest = key.prefix_match(dir)?;
    let name = rest.next()?;
    if rest.next().is_some() {
        return None;
    }
    parse_filename(name.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_per_backend() {
        let p = Path::from("backups/db");
        let (a, b) = (TxId(1), TxId(0xff));
        let name = "0000000000000001-00000000000000ff.ltx";
        assert_eq!(file_key(StoreKind::File, &p, 9, a, b).as_ref(), format!("backups/db/ltx/9/{name}"));
        assert_eq!(file_key(StoreKind::Gcs, &p, 0, a, b).as_ref(), format!("backups/db/ltx/0/{name}"));
        assert_eq!(file_key(StoreKind::Azure, &p, 2, a, b).as_ref(), format!("backups/db/ltx/2/{name}"));
        assert_eq!(file_key(StoreKind::S3, &p, 9, a, b).as_ref(), format!("backups/db/0009/{name}"));
        assert_eq!(file_key(StoreKind::S3, &p, 0, a, b).as_ref(), format!("backups/db/0000/{name}"));
        let root = Path::default();
        assert_eq!(file_key(StoreKind::S3, &root, 1, a, b).as_ref(), format!("0001/{name}"));
        assert_eq!(level_dir(StoreKind::File, &root, 10).as_ref(), "ltx/10");
        assert_eq!(level_dir(StoreKind::S3, &root, 10).as_ref(), "000a");
    }

    #[test]
    fn parse_key_ignores_foreign_names() {
        let dir = Path::from("db/0000");
        let ok = Path::from("db/0000/0000000000000001-0000000000000002.ltx");
        assert_eq!(parse_key(&dir, &ok), Some((TxId(1), TxId(2))));
        for bad in [
            "db/0000/0000000000000001-0000000000000002.ltx.tmp",
            "db/0000/0000000000000001-0000000000000002.ltx#1",
            "db/0000/sub/0000000000000001-0000000000000002.ltx",
            "db/0000/README",
            "db/00000/0000000000000001-0000000000000002.ltx",
        ] {
            assert_eq!(parse_key(&dir, &Path::from(bad)), None, "{bad}");
        }
    }
}
