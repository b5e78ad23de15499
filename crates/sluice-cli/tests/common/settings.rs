//! SQLite settings drawn from a test seed: the part of SQLite's configuration space that
//! changes what the WAL and the database file look like (page size, auto_vacuum) or when
//! SQLite writes, syncs, checkpoints and truncates them (synchronous, wal_autocheckpoint,
//! journal_size_limit).
//!
//! Page size and auto_vacuum are not random but a function of `seed % 24`: any 24 consecutive
//! seeds sweep all 8 × 3 pairs and any 8 consecutive seeds every page size, while a random
//! seed still picks a uniformly random pair. The other settings come from [`SplitMix`] on the
//! seed. Everything is reproducible from the seed alone.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Every page size SQLite allows.
pub const PAGE_SIZES: [u32; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// splitmix64: a tiny seeded generator whose streams for consecutive seeds are independent.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    pub fn word(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'a' + self.below(26) as u8)).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AutoVacuum {
    None,
    Full,
    Incremental,
}

impl AutoVacuum {
    pub const ALL: [AutoVacuum; 3] = [AutoVacuum::None, AutoVacuum::Full, AutoVacuum::Incremental];

    /// The value `PRAGMA auto_vacuum` takes and reports.
    pub fn pragma(self) -> i64 {
        self as i64
    }

    pub fn from_pragma(v: i64) -> AutoVacuum {
        *AutoVacuum::ALL.get(v as usize).unwrap_or_else(|| panic!("PRAGMA auto_vacuum reported {v}"))
    }
}

impl fmt::Display for AutoVacuum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AutoVacuum::None => "NONE",
            AutoVacuum::Full => "FULL",
            AutoVacuum::Incremental => "INCREMENTAL",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Off,
    Normal,
    Full,
}

/// One drawn point of the configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteSettings {
    pub page_size: u32,
    pub auto_vacuum: AutoVacuum,
    pub synchronous: Synchronous,
    /// `PRAGMA wal_autocheckpoint` in pages: 0 (off), small (10..=100) or 1000 (SQLite's default).
    pub wal_autocheckpoint: u32,
    /// `PRAGMA journal_size_limit` in bytes (the WAL is truncated to it after a reset);
    /// `None` keeps SQLite's default (no limit).
    pub journal_size_limit: Option<i64>,
}

impl SqliteSettings {
    /// The settings for `seed` (see the module comment for how page size and auto_vacuum are
    /// chosen).
    pub fn draw(seed: u64) -> SqliteSettings {
        let pair = seed % 24;
        let mut rng = SplitMix::new(seed ^ 0x5e77_1265);
        SqliteSettings {
            page_size: PAGE_SIZES[(pair % 8) as usize],
            auto_vacuum: AutoVacuum::ALL[(pair / 8) as usize],
            synchronous: rng.pick(&[Synchronous::Off, Synchronous::Normal, Synchronous::Full]),
            wal_autocheckpoint: match rng.below(3) {
                0 => 0,
                1 => rng.range(10, 100) as u32,
                _ => 1000,
            },
            journal_size_limit: match rng.below(3) {
                0 => None,
                1 => Some(rng.below(4) as i64 * 32 * 1024),
                _ => Some(64 << 20),
            },
        }
    }

    /// Creates a new WAL-mode database at `path` with these settings and returns the
    /// application's connection (configured by [`SqliteSettings::configure`]).
    ///
    /// Page size and auto_vacuum only take effect before the database is first written, so
    /// they are set before `journal_mode=WAL` writes the header; both are checked afterwards.
    pub fn create(&self, path: &Path, busy: Duration) -> Connection {
        assert!(!path.exists(), "{} already exists", path.display());
        let c = Connection::open(path).expect("create database");
        c.busy_timeout(busy).expect("busy timeout");
        c.execute_batch(&format!(
            "PRAGMA page_size={}; PRAGMA auto_vacuum={};",
            self.page_size,
            self.auto_vacuum.pragma()
        ))
        .expect("page_size / auto_vacuum");
        let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("journal_mode");
        assert_eq!(mode, "wal");
        let (ps, av): (u32, i64) = c
            .query_row("SELECT * FROM pragma_page_size, pragma_auto_vacuum", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("read page_size, auto_vacuum");
        assert_eq!((ps, AutoVacuum::from_pragma(av)), (self.page_size, self.auto_vacuum), "settings did not hold");
        self.configure(&c);
        c
    }

    /// Opens the application's connection to an existing database with these settings.
    pub fn open(&self, path: &Path, busy: Duration) -> Connection {
        assert!(path.is_file(), "{} does not exist", path.display());
        let c = Connection::open(path).expect("open database");
        c.busy_timeout(busy).expect("busy timeout");
        self.configure(&c);
        c
    }

    /// The per-connection settings: synchronous, wal_autocheckpoint, journal_size_limit.
    pub fn configure(&self, c: &Connection) {
        let sync = match self.synchronous {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        c.execute_batch(&format!("PRAGMA synchronous={sync}; PRAGMA wal_autocheckpoint={};", self.wal_autocheckpoint))
            .expect("synchronous / wal_autocheckpoint");
        if let Some(limit) = self.journal_size_limit {
            let set: i64 = c
                .query_row(&format!("PRAGMA journal_size_limit={limit}"), [], |r| r.get(0))
                .expect("journal_size_limit");
            assert_eq!(set, limit);
        }
    }
}

impl fmt::Display for SqliteSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page_size={} auto_vacuum={} synchronous={:?} wal_autocheckpoint={} journal_size_limit={}",
            self.page_size,
            self.auto_vacuum,
            self.synchronous,
            self.wal_autocheckpoint,
            self.journal_size_limit.map_or_else(|| "unset".to_string(), |l| l.to_string())
        )
    }
}
