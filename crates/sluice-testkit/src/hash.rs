//! Content hashes: the fixtures' `logical-v1` hash, file sha256, `PRAGMA integrity_check`.
//!
//! `logical-v1` (defined in `fixtures/litestream-0.5.17/README.md`):
//!
//! 1. for each row of `SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name`:
//!    `"schema " enc(type) " " enc(name) " " enc(tbl_name) " " enc(sql) "\n"`;
//! 2. for each of those rows with `type = 'table'`, by name: `"table " enc(name) "\n"`, then for
//!    each row of `SELECT * FROM "<name>" ORDER BY rowid`: `"row"` + `" " enc(col)` per column
//!    + `"\n"`;
//! 3. the lowercase hex sha256 of that text.
//!
//! `enc`: NULL → `n`; INTEGER → `i<decimal>`; REAL → `f<16 hex digits of the big-endian IEEE-754
//! bits>`; TEXT → `t<hex of the UTF-8 bytes>`; BLOB → `b<hex>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

/// Opens `db_path` for reading without leaving `-wal`/`-shm` files behind.
///
/// A WAL-mode database (restored files are) opened read-only normally creates `-wal` and `-shm`
/// next to it, which would litter fixture folders. When no `-wal` exists there is nothing to
/// read from it, so the file is opened with `immutable=1`; otherwise it is opened read-only the
/// normal way so the WAL's content is seen.
pub fn open_read_only(db_path: &Path) -> Result<Connection> {
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if PathBuf::from(wal).exists() {
        Connection::open_with_flags(db_path, flags)
    } else {
        let uri = format!("file:{}?immutable=1", uri_path(db_path)?);
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
    };
    conn.with_context(|| format!("open {}", db_path.display()))
}

fn uri_path(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path)?;
    let s = abs.to_str().with_context(|| format!("non-UTF-8 path {}", abs.display()))?;
    Ok(s.replace('%', "%25").replace('?', "%3f").replace('#', "%23"))
}

/// `logical-v1` hash of the database file at `db_path` (lowercase hex).
///
/// # Panics
/// If the file cannot be opened or read as a SQLite database.
pub fn logical_sha256(db_path: impl AsRef<Path>) -> String {
    let db_path = db_path.as_ref();
    let conn = open_read_only(db_path).unwrap_or_else(|e| panic!("{e:#}"));
    logical_sha256_conn(&conn).unwrap_or_else(|e| panic!("logical hash of {}: {e:#}", db_path.display()))
}

/// `logical-v1` hash over an open connection (for example one opened through a VFS).
pub fn logical_sha256_conn(conn: &Connection) -> Result<String> {
    let mut hasher = Sha256::new();
    logical_dump_to(conn, &|_| true, &mut |chunk| hasher.update(chunk.as_bytes()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// [`logical_sha256_conn`] without Litestream's own tables: the schema rows whose `tbl_name`
/// starts with `_litestream_` and those tables' rows are left out.
///
/// The real `litestream replicate` creates `_litestream_seq` and `_litestream_lock` in the
/// source database when it starts and writes `_litestream_seq` after its checkpoints, so a
/// database it replicates has commits the application never made. Comparing application
/// states across such commits needs this hash.
pub fn logical_sha256_conn_without_litestream(conn: &Connection) -> Result<String> {
    let mut hasher = Sha256::new();
    logical_dump_to(conn, &|tbl| !tbl.starts_with(b"_litestream_"), &mut |chunk| hasher.update(chunk.as_bytes()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// The `logical-v1` text itself (hash input), to diff when two hashes disagree.
pub fn logical_dump(db_path: impl AsRef<Path>) -> String {
    let db_path = db_path.as_ref();
    let conn = open_read_only(db_path).unwrap_or_else(|e| panic!("{e:#}"));
    let mut out = String::new();
    logical_dump_to(&conn, &|_| true, &mut |chunk| out.push_str(chunk))
        .unwrap_or_else(|e| panic!("logical dump of {}: {e:#}", db_path.display()));
    out
}

/// Streams the `logical-v1` text to `sink`, one line at a time, for the schema rows whose
/// `tbl_name` `keep` accepts.
fn logical_dump_to(conn: &Connection, keep: &dyn Fn(&[u8]) -> bool, sink: &mut dyn FnMut(&str)) -> Result<()> {
    let mut tables = Vec::new();
    let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")?;
    let mut rows = stmt.query([])?;
    let mut line = String::new();
    while let Some(row) = rows.next()? {
        if let ValueRef::Text(tbl) = row.get_ref(2)?
            && !keep(tbl)
        {
            continue;
        }
        line.clear();
        line.push_str("schema");
        for i in 0..4 {
            line.push(' ');
            enc(&mut line, row.get_ref(i)?);
        }
        line.push('\n');
        sink(&line);
        if let (ValueRef::Text(b"table"), ValueRef::Text(name)) = (row.get_ref(0)?, row.get_ref(1)?) {
            tables.push(String::from_utf8(name.to_vec()).context("table name is not UTF-8")?);
        }
    }
    // Already ordered by name within type 'table' (BINARY collation = byte order).
    for name in &tables {
        line.clear();
        line.push_str("table ");
        enc(&mut line, ValueRef::Text(name.as_bytes()));
        line.push('\n');
        sink(&line);
        let sql = format!("SELECT * FROM \"{}\" ORDER BY rowid", name.replace('"', "\"\""));
        let mut stmt = conn.prepare(&sql).with_context(|| sql.clone())?;
        let ncols = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            line.clear();
            line.push_str("row");
            for i in 0..ncols {
                line.push(' ');
                enc(&mut line, row.get_ref(i)?);
            }
            line.push('\n');
            sink(&line);
        }
    }
    Ok(())
}

fn enc(out: &mut String, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push('n'),
        ValueRef::Integer(i) => {
            let _ = write!(out, "i{i}");
        }
        ValueRef::Real(f) => {
            let _ = write!(out, "f{:016x}", f.to_bits());
        }
        ValueRef::Text(t) => {
            out.push('t');
            out.push_str(&hex::encode(t));
        }
        ValueRef::Blob(b) => {
            out.push('b');
            out.push_str(&hex::encode(b));
        }
    }
}

/// Lowercase hex sha256 of the file's bytes.
///
/// # Panics
/// If the file cannot be read.
pub fn file_sha256(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The rows of `PRAGMA integrity_check` joined by `\n` (`"ok"` for a sound database).
///
/// # Panics
/// If the file cannot be opened.
pub fn integrity_check(db_path: impl AsRef<Path>) -> String {
    let db_path = db_path.as_ref();
    let conn = open_read_only(db_path).unwrap_or_else(|e| panic!("{e:#}"));
    let run = || -> Result<String> {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
    };
    run().unwrap_or_else(|e| format!("integrity_check failed to run: {e:#}"))
}

/// `SELECT count(*)` of every table in `sqlite_schema`, by name (compare with a manifest's
/// `row_counts`).
pub fn row_counts(db_path: impl AsRef<Path>) -> BTreeMap<String, u64> {
    let db_path = db_path.as_ref();
    let conn = open_read_only(db_path).unwrap_or_else(|e| panic!("{e:#}"));
    let run = || -> Result<BTreeMap<String, u64>> {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        let mut out = BTreeMap::new();
        for name in names {
            let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
            let n: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
            out.insert(name, u64::try_from(n)?);
        }
        Ok(out)
    };
    run().unwrap_or_else(|e| panic!("row counts of {}: {e:#}", db_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_storage_class() {
        let mut s = String::new();
        for v in [
            ValueRef::Null,
            ValueRef::Integer(-5),
            ValueRef::Real(1.0),
            ValueRef::Text(b"hi"),
            ValueRef::Blob(&[0, 255]),
        ] {
            enc(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "n i-5 f3ff0000000000000 t6869 b00ff ");
    }

    #[test]
    fn dump_of_small_db() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(a, b); INSERT INTO t VALUES (1, 'x'), (NULL, 2.5);").unwrap();
        drop(conn);
        let dump = logical_dump(&path);
        let expected = format!(
            "schema t{} t74 t74 t{}\ntable t74\nrow i1 t78\nrow n f4004000000000000\n",
            hex::encode("table"),
            hex::encode("CREATE TABLE t(a, b)")
        );
        assert_eq!(dump, expected);
        assert_eq!(logical_sha256(&path), sha256_hex(expected.as_bytes()));
        assert_eq!(integrity_check(&path), "ok");
        assert_eq!(row_counts(&path).get("t"), Some(&2));
    }

    #[test]
    fn litestream_tables_left_out_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1);").unwrap();
        let plain = logical_sha256_conn(&conn).unwrap();
        assert_eq!(logical_sha256_conn_without_litestream(&conn).unwrap(), plain);
        conn.execute_batch(
            "CREATE TABLE _litestream_seq(id INTEGER PRIMARY KEY, seq INTEGER);
             CREATE TABLE _litestream_lock(id INTEGER); INSERT INTO _litestream_seq VALUES (1, 1);",
        )
        .unwrap();
        assert_ne!(logical_sha256_conn(&conn).unwrap(), plain);
        assert_eq!(logical_sha256_conn_without_litestream(&conn).unwrap(), plain);
        conn.execute_batch("INSERT INTO t VALUES (2)").unwrap();
        assert_ne!(logical_sha256_conn_without_litestream(&conn).unwrap(), plain);
    }
}
