//! The Litestream 0.5.17 fixtures in `<repo>/fixtures/litestream-0.5.17` and their manifests.
//!
//! See that folder's README for what each field means. TXIDs are kept as the manifests spell
//! them (16 lowercase hex digits); [`txid`] parses one. Keys not modelled here are kept in the
//! `extra` maps, so nothing in a manifest is lost.
//!
//! File mtimes carry Litestream's `CreatedAt` (the LTX header timestamp). Use
//! [`copy_replica_to`] / [`copy_corrupt_case_to`] to get a private copy with the mtimes re-applied
//! from the headers, so `-timestamp` restores work on it whatever happened to the checkout.

use std::collections::BTreeMap;
use std::fs::{File, FileTimes};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// Byte offset of the LTX header timestamp (big-endian i64, ms since the Unix epoch).
pub const LTX_TIMESTAMP_OFFSET: usize = 32;

/// `<repo>/fixtures/litestream-0.5.17`.
pub fn fixtures_dir() -> PathBuf {
    let dir = crate::repo_root().join("fixtures").join("litestream-0.5.17");
    assert!(dir.is_dir(), "fixtures not found at {}", dir.display());
    dir
}

/// `<fixtures>/<name>` (panics if absent).
pub fn fixture_dir(name: &str) -> PathBuf {
    let dir = fixtures_dir().join(name);
    assert!(dir.is_dir(), "no fixture {name:?} at {}", dir.display());
    dir
}

/// `<fixtures>/<name>/replica`: the checked-in replica. Read it, don't write to it; mtimes are
/// only right after `scripts/test` ran `set_mtimes.py` (or use [`copy_replica_to`]).
pub fn replica_dir(name: &str) -> PathBuf {
    fixture_dir(name).join("replica")
}

/// `<fixtures>/<name>/expected/latest.db`: the output of `litestream restore` (no `-txid`).
pub fn expected_latest_db(name: &str) -> PathBuf {
    fixture_dir(name).join("expected").join("latest.db")
}

/// The fixtures that hold a replica (every fixture but `corrupt`), sorted:
/// `basic`, `compacted`, `pagesize-1024`, `pagesize-65536`, `pitr`, `shrink`, `vfs-write`.
/// The corrupt cases are in `load_manifest("corrupt").cases`.
pub fn all_fixture_names() -> Vec<String> {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").is_file() && e.path().join("replica").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Parses `<fixtures>/<name>/manifest.json` (panics with the serde error if it does not fit).
pub fn load_manifest(name: &str) -> Manifest {
    let path = fixture_dir(name).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Parses a TXID as written in manifests and file names (16 hex digits).
pub fn txid(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("bad txid {hex:?}: {e}"))
}

/// Formats a TXID the way Litestream does (16 lowercase hex digits).
pub fn format_txid(txid: u64) -> String {
    format!("{txid:016x}")
}

/// Copies fixture `name`'s replica (the contents of `replica/`, i.e. `ltx/<level>/…`) into
/// `dest` (created if needed) and sets each `.ltx` file's mtime to its header timestamp.
/// Returns `dest`, ready to be used as a `file://` replica.
pub fn copy_replica_to(name: &str, dest: impl AsRef<Path>) -> PathBuf {
    copy_tree_with_ltx_mtimes(&replica_dir(name), dest.as_ref())
        .unwrap_or_else(|e| panic!("copy fixture {name:?} replica: {e:#}"))
}

/// Like [`copy_replica_to`] for `corrupt/cases/<case>/replica` (e.g. `"bitflip-snapshot"`).
pub fn copy_corrupt_case_to(case: &str, dest: impl AsRef<Path>) -> PathBuf {
    let src = fixture_dir("corrupt").join("cases").join(case).join("replica");
    assert!(src.is_dir(), "no corrupt case {case:?} at {}", src.display());
    copy_tree_with_ltx_mtimes(&src, dest.as_ref()).unwrap_or_else(|e| panic!("copy corrupt case {case:?}: {e:#}"))
}

/// Recursively copies `src` into `dest`, then re-applies the LTX mtime convention to `dest`.
pub fn copy_tree_with_ltx_mtimes(src: &Path, dest: &Path) -> Result<PathBuf> {
    copy_tree(src, dest)?;
    set_ltx_mtimes(dest)?;
    Ok(dest.to_path_buf())
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Sets the mtime (and atime) of every `.ltx` file under `root` to its header timestamp, as
/// `tools/set_mtimes.py` does (the magic is not checked: corrupt files get it too). Returns how
/// many files were touched.
pub fn set_ltx_mtimes(root: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            n += set_ltx_mtimes(&path)?;
        } else if path.extension().is_some_and(|e| e == "ltx") {
            let Some(ms) = ltx_header_timestamp_ms(&path)? else {
                continue;
            };
            let t = ms_to_system_time(ms);
            File::open(&path)
                .and_then(|f| f.set_times(FileTimes::new().set_accessed(t).set_modified(t)))
                .with_context(|| format!("set mtime of {}", path.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// The header timestamp (ms) of an LTX file, or `None` if it is shorter than 40 bytes.
pub fn ltx_header_timestamp_ms(path: &Path) -> Result<Option<i64>> {
    let mut head = Vec::with_capacity(40);
    File::open(path)
        .and_then(|f| f.take(40).read_to_end(&mut head))
        .with_context(|| format!("read {}", path.display()))?;
    let Some(bytes) = head.get(LTX_TIMESTAMP_OFFSET..LTX_TIMESTAMP_OFFSET + 8) else {
        return Ok(None);
    };
    let bytes: [u8; 8] = bytes.try_into().expect("BUG: slice of 8");
    Ok(Some(i64::from_be_bytes(bytes)))
}

/// Formats ms since the Unix epoch as RFC 3339 UTC with milliseconds, the way the manifests
/// and Litestream's `-timestamp` accept it: `2026-11-26T10:37:19.292Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

fn ms_to_system_time(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

/// One fixture's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub fixture: String,
    pub description: String,
    pub page_size: u32,
    /// 16 hex digits.
    pub final_txid: String,
    pub generator: Generator,
    pub config_yaml: Option<String>,
    pub restore_command: Option<String>,
    #[serde(default)]
    pub workload: Vec<Value>,
    #[serde(default)]
    pub ltx_files: Vec<LtxFileEntry>,
    #[serde(default)]
    pub ltx_listing_json: Vec<LtxListingEntry>,
    #[serde(default)]
    pub restores: Vec<RestoreCase>,
    /// Keyed by path relative to the fixture (`expected/latest.db`).
    #[serde(default)]
    pub expected_files: BTreeMap<String, ExpectedFile>,
    /// Keyed by TXID (16 hex digits).
    #[serde(default)]
    pub source_content_by_txid: BTreeMap<String, SourceContent>,
    /// Keyed by TXID (16 hex digits).
    #[serde(default)]
    pub summary_by_txid: BTreeMap<String, TxidSummary>,
    /// `corrupt` only.
    #[serde(default)]
    pub cases: Vec<CorruptCase>,
    /// `compacted`: TXID → restorable.
    pub restorable_txids: Option<BTreeMap<String, bool>>,
    /// `compacted`.
    pub l0_only_txids: Option<Vec<String>>,
    /// `compacted`.
    pub txids_missing_from_l0: Option<Vec<String>>,
    /// `pitr`: TXID → its L0 header timestamp.
    pub l0_timestamps: Option<BTreeMap<String, Timestamp>>,
    /// `pitr`.
    pub timestamp_semantics: Option<String>,
    /// `shrink`: (TXID, commit) of each L0 file.
    pub l0_commit_sizes: Option<Vec<(String, u32)>>,
    /// `vfs-write`.
    pub pre_vfs_txid: Option<String>,
    /// `vfs-write`.
    pub vfs_txids: Option<Vec<String>>,
    /// Everything else (`hash_definitions`, `observed_vfs_issue`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Manifest {
    pub fn final_txid(&self) -> u64 {
        txid(&self.final_txid)
    }

    /// The restore without `-txid`/`-timestamp` (panics if the manifest has none).
    pub fn latest_restore(&self) -> &RestoreCase {
        self.restores
            .iter()
            .find(|r| r.args.is_empty())
            .unwrap_or_else(|| panic!("fixture {} has no latest restore", self.fixture))
    }

    /// The `ltx_files` entry for `level`/`min`-`max`, if any.
    pub fn ltx_file(&self, level: u32, min: u64, max: u64) -> Option<&LtxFileEntry> {
        self.ltx_files.iter().find(|f| f.level == level && f.min_txid() == min && f.max_txid() == max)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Generator {
    pub script: Option<String>,
    pub litestream_version: String,
    pub sqlite3_cli_version: Option<String>,
    pub python_sqlite_version: Option<String>,
    pub generated_at: Option<String>,
}

/// One `.ltx` file of the replica.
#[derive(Debug, Clone, Deserialize)]
pub struct LtxFileEntry {
    /// Relative to the replica dir: `ltx/<level>/<min>-<max>.ltx`.
    pub path: String,
    pub level: u32,
    pub size: u64,
    pub sha256: String,
    pub min_txid: String,
    pub max_txid: String,
    pub mtime_ns: Option<i64>,
    pub is_snapshot: Option<bool>,
    pub header: LtxHeader,
    pub mtime_equals_header_timestamp: Option<bool>,
    pub page_count: u32,
    /// Ranges such as `1-3,42-43`; see [`LtxFileEntry::pgnos`].
    pub pgnos: String,
    pub lz4_bytes_total: Option<u64>,
    pub page_index_offset: u64,
    pub page_index_size: u64,
    /// 16 hex digits.
    pub post_apply_checksum: Option<String>,
    /// 16 hex digits.
    pub file_checksum: String,
    pub file_checksum_verified: Option<bool>,
    /// 16 hex digits.
    pub xor_of_page_checksums: Option<String>,
    pub mode_as_written: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl LtxFileEntry {
    pub fn min_txid(&self) -> u64 {
        txid(&self.min_txid)
    }

    pub fn max_txid(&self) -> u64 {
        txid(&self.max_txid)
    }

    pub fn file_checksum(&self) -> u64 {
        txid(&self.file_checksum)
    }

    /// `pgnos` expanded to the list of page numbers.
    pub fn pgnos(&self) -> Vec<u32> {
        expand_ranges(&self.pgnos)
    }

    /// The file's path in a replica rooted at `replica` (e.g. from [`copy_replica_to`]).
    pub fn path_in(&self, replica: &Path) -> PathBuf {
        replica.join(&self.path)
    }
}

/// Expands `1-3,42-43` to `[1, 2, 3, 42, 43]`.
pub fn expand_ranges(ranges: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in ranges.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| -> u32 { s.trim().parse().unwrap_or_else(|e| panic!("bad page range {part:?}: {e}")) };
        match part.split_once('-') {
            Some((a, b)) => out.extend(parse(a)..=parse(b)),
            None => out.push(parse(part)),
        }
    }
    out
}

/// The decoded 100-byte LTX header.
#[derive(Debug, Clone, Deserialize)]
pub struct LtxHeader {
    pub flags: u32,
    pub page_size: u32,
    pub commit: u32,
    pub min_txid: String,
    pub max_txid: String,
    pub timestamp_ms: i64,
    /// RFC 3339 with ms.
    pub timestamp: Option<String>,
    pub pre_apply_checksum: Option<String>,
    pub wal_offset: i64,
    pub wal_size: i64,
    /// 8 hex digits.
    pub wal_salt1: String,
    /// 8 hex digits.
    pub wal_salt2: String,
    pub node_id: Option<u64>,
    pub reserved_bytes_zero: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl LtxHeader {
    pub fn wal_salt1(&self) -> u32 {
        u32::from_str_radix(&self.wal_salt1, 16).expect("wal_salt1 is hex")
    }

    pub fn wal_salt2(&self) -> u32 {
        u32::from_str_radix(&self.wal_salt2, 16).expect("wal_salt2 is hex")
    }
}

/// One row of `litestream ltx -level all -json`.
#[derive(Debug, Clone, Deserialize)]
pub struct LtxListingEntry {
    pub level: u32,
    pub min_txid: String,
    pub max_txid: String,
    pub size: u64,
    /// Whole seconds only.
    pub timestamp: String,
}

/// One `litestream restore` run.
#[derive(Debug, Clone, Deserialize)]
pub struct RestoreCase {
    /// Empty (latest), `["-txid", <16 hex>]` or `["-timestamp", <RFC 3339>]`.
    pub args: Vec<String>,
    pub rc: i32,
    /// `level/filename` in application order (`None` when there was no plan).
    pub plan: Option<Vec<String>>,
    pub restored_txid: Option<String>,
    /// Last line of stderr when `rc != 0`.
    pub error: Option<String>,
    pub result: Option<RestoreResult>,
    pub label: String,
    pub note: Option<String>,
    pub python_reference_restore_matches: Option<bool>,
    pub deterministic_bytes: Option<bool>,
    pub matches_source_content_at_txid: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl RestoreCase {
    pub fn is_latest(&self) -> bool {
        self.args.is_empty()
    }

    pub fn succeeded(&self) -> bool {
        self.rc == 0
    }

    fn arg(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// The `-txid` argument, parsed.
    pub fn txid_arg(&self) -> Option<u64> {
        self.arg("-txid").map(txid)
    }

    /// The `-timestamp` argument (RFC 3339).
    pub fn timestamp_arg(&self) -> Option<&str> {
        self.arg("-timestamp")
    }

    pub fn restored_txid(&self) -> Option<u64> {
        self.restored_txid.as_deref().map(txid)
    }
}

/// What a successful restore produced.
#[derive(Debug, Clone, Deserialize)]
pub struct RestoreResult {
    pub db_sha256: String,
    pub logical_sha256: String,
    pub row_counts: BTreeMap<String, u64>,
    pub dump_sha256: Option<String>,
    pub dump_bytes: Option<u64>,
    pub integrity_check: Option<String>,
    pub file_size: Option<u64>,
    pub page_size: Option<u32>,
    pub page_count: Option<u32>,
    pub freelist_count: Option<u32>,
    pub header_page_size: Option<u32>,
    pub header_write_version: Option<u8>,
    pub header_read_version: Option<u8>,
    pub header_db_size_pages: Option<u32>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedFile {
    pub what: Option<String>,
    pub txid: Option<String>,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SourceContent {
    pub logical_sha256: String,
    pub row_counts: BTreeMap<String, u64>,
    pub note: Option<String>,
}

/// One row of `summary_by_txid`.
#[derive(Debug, Clone, Deserialize)]
pub struct TxidSummary {
    pub restorable: bool,
    pub db_sha256: Option<String>,
    pub logical_sha256: Option<String>,
    pub dump_sha256: Option<String>,
    pub row_counts: Option<BTreeMap<String, u64>>,
    pub page_count: Option<u32>,
    pub plan: Option<Vec<String>>,
    pub error: Option<String>,
    pub l0_header_timestamp: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Timestamp {
    pub timestamp_ms: i64,
    pub timestamp: String,
}

/// One `corrupt` case.
#[derive(Debug, Clone, Deserialize)]
pub struct CorruptCase {
    /// Directory name under `cases/` (e.g. `bitflip-snapshot`).
    pub case: String,
    /// Relative to the `corrupt` fixture: `cases/<case>/replica`.
    pub replica: String,
    /// Relative to the `corrupt` fixture; `None` for `valid`.
    pub corrupted_file: Option<String>,
    /// `checksum_mismatch`, `truncated` or `bad_magic`; `None` for `valid`.
    pub expected_decoder_error: Option<String>,
    pub litestream_restore: RestoreCase,
    pub original_file: Option<String>,
    pub original_sha256: Option<String>,
    pub corrupted_sha256: Option<String>,
    /// `bitflip`, `truncate`, `badmagic`, …
    pub corruption: Option<String>,
    pub detail: Option<BTreeMap<String, Value>>,
    pub reference_decoder_message: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl CorruptCase {
    /// The case's replica dir in the checked-in fixtures.
    pub fn replica_dir(&self) -> PathBuf {
        fixture_dir("corrupt").join(&self.replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(1_795_689_439_292), "2026-11-26T10:37:19.292Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
    }

    #[test]
    fn expands_ranges() {
        assert_eq!(expand_ranges("1-3,42-43,7"), vec![1, 2, 3, 42, 43, 7]);
        assert_eq!(expand_ranges(""), Vec::<u32>::new());
    }
}
