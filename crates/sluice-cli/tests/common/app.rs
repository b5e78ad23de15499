//! The application of the configuration-space test: one connection, numbered transactions,
//! and the logical hash of the database after each of them.
//!
//! Every transaction sets `seq.n` and `PRAGMA user_version` to its sequence number, and after
//! its COMMIT the database's logical hash is recorded for that number. A restored database
//! tells its number (`seq.n`), so it is an exact prefix of the history iff its hash equals
//! the one recorded for that number. The only commits without a number are VACUUMs, which
//! change no logical content (every table has an INTEGER PRIMARY KEY, so rowids survive), and
//! the real Litestream's writes to its own `_litestream_*` tables, which [`HashKind`] can leave
//! out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, Params};
use sluice_testkit::hash;

use super::settings::{AutoVacuum, SplitMix, SqliteSettings};

/// The application's busy timeout (a safety net: the replicators must not hold SQLite's
/// locks anywhere near this long).
pub const BUSY: Duration = Duration::from_secs(30);
/// Overflow rows kept at once (older ones are deleted), so hashing after each commit stays
/// cheap at 64 KiB pages.
const MAX_BIG_ROWS: i64 = 3;

/// Which logical hash identifies a state.
#[derive(Clone, Copy, Debug)]
pub enum HashKind {
    /// `logical-v1` of everything (databases only Sluice touches).
    Full,
    /// Without the `_litestream_*` tables the real Litestream creates and writes.
    WithoutLitestream,
}

impl HashKind {
    pub fn of_conn(self, c: &Connection) -> String {
        match self {
            HashKind::Full => hash::logical_sha256_conn(c),
            HashKind::WithoutLitestream => hash::logical_sha256_conn_without_litestream(c),
        }
        .unwrap_or_else(|e| panic!("logical hash: {e:#}"))
    }

    pub fn of_file(self, path: &Path) -> String {
        let c = hash::open_read_only(path).unwrap_or_else(|e| panic!("{e:#}"));
        self.of_conn(&c)
    }
}

/// The database after transaction `seq`.
#[derive(Clone, Debug)]
pub struct State {
    pub hash: String,
    /// auto_vacuum modes the file had while at this seq (a VACUUM may switch it).
    pub auto_vacuum: Vec<AutoVacuum>,
}

pub struct App {
    path: PathBuf,
    settings: SqliteSettings,
    conn: Option<Connection>,
    hash: HashKind,
    /// Busy timeout while an application checkpoint runs: FULL/RESTART/TRUNCATE wait for
    /// readers, and both replicators keep a read transaction open, so a busy result is normal
    /// (Sluice moves its own on; Litestream holds it).
    checkpoint_busy: Duration,
    auto_vacuum: AutoVacuum,
    pub seq: u64,
    pub history: BTreeMap<u64, State>,
    /// How often each operation ran (printed per case).
    pub counts: BTreeMap<String, u32>,
    tables: Vec<String>,
    indexes: Vec<String>,
    t_columns: u32,
    next_name: u32,
}

impl App {
    /// Creates the database (seq 1: tables `seq` and `t` and a few rows).
    pub fn create(
        path: &Path,
        settings: SqliteSettings,
        hash: HashKind,
        checkpoint_busy: Duration,
        rng: &mut SplitMix,
    ) -> App {
        let conn = settings.create(path, BUSY);
        let mut app = App {
            path: path.to_path_buf(),
            settings,
            conn: Some(conn),
            hash,
            checkpoint_busy,
            auto_vacuum: settings.auto_vacuum,
            seq: 0,
            history: BTreeMap::new(),
            counts: BTreeMap::new(),
            tables: Vec::new(),
            indexes: Vec::new(),
            t_columns: 0,
            next_name: 0,
        };
        app.begin();
        app.batch(
            "CREATE TABLE seq(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
             INSERT INTO seq VALUES (1, 0);
             CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v REAL, big INTEGER NOT NULL DEFAULT 0, data BLOB);",
        );
        app.insert_rows(rng, 10);
        app.commit("create");
        app
    }

    pub fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("BUG: application connection is closed")
    }

    pub fn page_size(&self) -> u32 {
        self.settings.page_size
    }

    pub fn auto_vacuum(&self) -> AutoVacuum {
        self.auto_vacuum
    }

    pub fn hash_kind(&self) -> HashKind {
        self.hash
    }

    /// Runs one statement, panicking with the seq on error.
    #[track_caller]
    fn exec<P: Params>(&self, sql: &str, params: P) {
        if let Err(e) = self.conn().execute(sql, params) {
            panic!("application SQL failed after seq {}: {sql}: {e}", self.seq);
        }
    }

    /// Runs statements without parameters, panicking with the seq on error.
    #[track_caller]
    fn batch(&self, sql: &str) {
        if let Err(e) = self.conn().execute_batch(sql) {
            panic!("application SQL failed after seq {}: {sql}: {e}", self.seq);
        }
    }

    /// Counts an operation for the per-case summary.
    pub fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_string()).or_default() += 1;
    }

    fn begin(&self) {
        self.batch("BEGIN IMMEDIATE;");
    }

    /// Numbers the open transaction, commits it and records the new state.
    fn commit(&mut self, what: &str) {
        self.seq += 1;
        let seq = self.seq;
        self.batch(&format!("UPDATE seq SET n = {seq} WHERE id = 1; PRAGMA user_version = {seq}; COMMIT;"));
        let hash = self.hash.of_conn(self.conn());
        self.history.insert(seq, State { hash, auto_vacuum: vec![self.auto_vacuum] });
        self.count(what);
    }

    fn max_id(&self) -> i64 {
        self.conn().query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0)).expect("max(id)")
    }

    fn page_count(&self) -> i64 {
        self.conn().query_row("PRAGMA page_count", [], |r| r.get(0)).expect("page_count")
    }

    fn insert_rows(&self, rng: &mut SplitMix, n: u64) {
        // Small rows, so the database (hashed after every commit) stays small at 64 KiB pages.
        let max = u64::from(self.page_size() / 4).clamp(16, 300);
        for _ in 0..n {
            let klen = 4 + rng.below(12) as usize;
            let k = rng.word(klen);
            let v = rng.below(1 << 20) as f64 / 7.0;
            let len = rng.range(10, max) as usize;
            self.exec("INSERT INTO t(k, v, data) VALUES (?1, ?2, ?3)", (k, v, rng.bytes(len)));
        }
    }

    /// A few small rows.
    pub fn insert(&mut self, rng: &mut SplitMix) {
        self.begin();
        let n = rng.range(1, 20);
        self.insert_rows(rng, n);
        self.commit("insert");
    }

    /// A row larger than a page (an overflow chain of 1-2 pages); the oldest such rows go.
    pub fn insert_big(&mut self, rng: &mut SplitMix) {
        let ps = u64::from(self.page_size());
        self.begin();
        let len = rng.range(ps + 1, 5 * ps / 2) as usize;
        let data = rng.bytes(len);
        self.exec("INSERT INTO t(k, v, big, data) VALUES ('big', 0, 1, ?1)", [data]);
        self.exec(
            "DELETE FROM t WHERE big AND id NOT IN (SELECT id FROM t WHERE big ORDER BY id DESC LIMIT ?1)",
            [MAX_BIG_ROWS],
        );
        self.commit("insert-overflow");
    }

    pub fn update(&mut self, rng: &mut SplitMix) {
        let max = self.max_id().max(1) as u64;
        self.begin();
        for _ in 0..rng.range(1, 10) {
            let id = rng.range(1, max) as i64;
            self.exec("UPDATE t SET k = ?1, v = v + 1 WHERE id = ?2 AND NOT big", (rng.word(6), id));
        }
        if rng.chance(30) {
            // Regrow or shrink an overflow chain.
            let len = rng.range(1, 3 * u64::from(self.page_size())) as usize;
            self.exec("UPDATE t SET data = ?1 WHERE id = (SELECT max(id) FROM t WHERE big)", [rng.bytes(len)]);
        }
        self.commit("update");
    }

    pub fn delete(&mut self, rng: &mut SplitMix) {
        let max = self.max_id().max(1) as u64;
        self.begin();
        for _ in 0..rng.range(1, 10) {
            self.exec("DELETE FROM t WHERE id = ?1", [rng.range(1, max) as i64]);
        }
        self.commit("delete");
    }

    /// One schema change: CREATE / ALTER / DROP TABLE, CREATE / DROP INDEX.
    pub fn schema(&mut self, rng: &mut SplitMix) {
        self.next_name += 1;
        let n = self.next_name;
        self.begin();
        let what = match rng.below(6) {
            0 | 1 if self.tables.len() < 4 => {
                let name = format!("x{n}");
                self.batch(&format!("CREATE TABLE {name}(id INTEGER PRIMARY KEY, a TEXT, b BLOB);"));
                for _ in 0..rng.range(1, 30) {
                    self.exec(&format!("INSERT INTO {name}(a, b) VALUES (?1, ?2)"), (rng.word(8), rng.bytes(40)));
                }
                self.tables.push(name);
                "create-table"
            }
            2 if !self.tables.is_empty() => {
                let name = self.tables.remove(rng.below(self.tables.len() as u64) as usize);
                self.batch(&format!("DROP TABLE {name};"));
                self.indexes.retain(|i| !i.starts_with(&format!("{name}_")));
                "drop-table"
            }
            3 if !self.indexes.is_empty() => {
                let name = self.indexes.remove(rng.below(self.indexes.len() as u64) as usize);
                self.batch(&format!("DROP INDEX {name};"));
                "drop-index"
            }
            4 => {
                let table = if self.tables.is_empty() || rng.chance(50) {
                    "t".to_string()
                } else {
                    rng.pick(&self.tables.iter().map(String::as_str).collect::<Vec<_>>()).to_string()
                };
                let col = if table == "t" { "k" } else { "a" };
                let name = format!("{table}_i{n}");
                self.batch(&format!("CREATE INDEX {name} ON {table}({col}, id);"));
                self.indexes.push(name);
                "create-index"
            }
            _ if self.t_columns < 4 => {
                self.t_columns += 1;
                self.batch(&format!("ALTER TABLE t ADD COLUMN c{n} INTEGER DEFAULT {n};"));
                self.batch(&format!("UPDATE t SET c{n} = id % 7 WHERE id % 3 = 0;"));
                "alter-table"
            }
            _ => {
                self.batch("UPDATE t SET v = -v WHERE id % 5 = 0;");
                "schema-noop-update"
            }
        };
        self.commit(what);
    }

    /// `PRAGMA incremental_vacuum(N)` in a numbered transaction (a no-op unless auto_vacuum is
    /// INCREMENTAL).
    pub fn incremental_vacuum(&mut self, rng: &mut SplitMix) {
        let pages = if rng.chance(30) { 0 } else { rng.range(1, 50) };
        self.begin();
        self.batch(&format!("PRAGMA incremental_vacuum({pages});"));
        self.commit("incremental-vacuum");
    }

    /// An application checkpoint; returns SQLite's (busy, log, checkpointed).
    pub fn checkpoint(&mut self, mode: &str) -> (i64, i64, i64) {
        let c = self.conn();
        c.busy_timeout(self.checkpoint_busy).expect("busy timeout");
        let r = super::checkpoint(c, mode);
        c.busy_timeout(BUSY).expect("busy timeout");
        let r = match r {
            Ok(r) => r,
            Err(e) if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)) => {
                (1, -1, -1)
            }
            Err(e) => panic!("application checkpoint {mode} after seq {}: {e}", self.seq),
        };
        self.count(&format!("checkpoint-{mode}{}", if r.0 == 0 { "" } else { "-busy" }));
        r
    }

    /// Deletes most of `t` after growing it, then VACUUMs (switching auto_vacuum mode if
    /// asked): the database must end up smaller than before the delete.
    pub fn shrink(&mut self, rng: &mut SplitMix, switch_to: Option<AutoVacuum>) {
        let ps = self.page_size() as usize;
        self.begin();
        for _ in 0..32 {
            self.exec("INSERT INTO t(k, v, data) VALUES ('bulk', 1, ?1)", [rng.bytes(ps / 2)]);
        }
        self.commit("grow");
        let grown = self.page_count();
        self.begin();
        self.batch("DELETE FROM t WHERE k = 'bulk' OR (id % 3 = 0 AND NOT big);");
        self.commit("delete-most");
        if let Some(mode) = switch_to {
            self.batch(&format!("PRAGMA auto_vacuum = {};", mode.pragma()));
        }
        self.batch("VACUUM;");
        let shrunk = self.page_count();
        assert!(shrunk < grown, "delete + VACUUM did not shrink the database: {grown} -> {shrunk} pages");
        let av: i64 = self.conn().query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).expect("auto_vacuum");
        self.auto_vacuum = AutoVacuum::from_pragma(av);
        if let Some(mode) = switch_to {
            assert_eq!(self.auto_vacuum, mode, "VACUUM did not switch auto_vacuum");
        }
        // VACUUM commits without a number: its state must be the numbered one before it.
        let hash = self.hash.of_conn(self.conn());
        let state = self.history.get_mut(&self.seq).expect("BUG: current seq recorded");
        assert_eq!(hash, state.hash, "VACUUM changed the logical content");
        if !state.auto_vacuum.contains(&self.auto_vacuum) {
            state.auto_vacuum.push(self.auto_vacuum);
        }
        self.count(if switch_to.is_some() { "vacuum-switch-auto-vacuum" } else { "vacuum" });
    }

    /// Closes the application's connection. Returns whether the WAL file is gone afterwards
    /// (SQLite deletes it when the last connection of any process closes).
    pub fn close(&mut self) -> bool {
        drop(self.conn.take());
        self.count("close");
        !PathBuf::from(format!("{}-wal", self.path.display())).exists()
    }

    pub fn reopen(&mut self) {
        assert!(self.conn.is_none(), "BUG: reopen of an open connection");
        self.conn = Some(self.settings.open(&self.path, BUSY));
    }

    /// Closes the last connection (SQLite checkpoints the WAL into the file and deletes it),
    /// renames the database file to `to` and reopens it there: the database appears at `to`
    /// complete, never as an empty file.
    pub fn move_to(&mut self, to: &Path) {
        assert!(self.close(), "the WAL survived the close of the last connection");
        std::fs::rename(&self.path, to).expect("rename the database into place");
        self.path = to.to_path_buf();
        self.reopen();
    }
}
