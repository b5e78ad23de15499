//! The quiet stamp: resuming after a restart when the WAL is empty.
//!
//! A database nobody wrote since the daemon opened it has an empty WAL (or none), so the
//! WAL position cannot say whether it changed while the daemon was stopped, and every
//! restart would upload a full image. Instead, while the WAL is empty and everything is
//! captured, the database file's identity and change times are recorded with the TXID of
//! the newest local file. Our read transaction then sits on read mark 0, which forbids any
//! checkpoint from writing the database file, so that file is exactly the state at that
//! TXID. At the next start (with our read lock taken again), an empty WAL and the very same
//! file (device, inode, size, modification and status-change times: no write leaves the
//! status-change time as it was) mean nothing changed: replication resumes at that TXID.
//! Anything else — no stamp, another TXID, any difference — falls back to a full image.
//!
//! File times have a granularity (a clock tick, or whole seconds on some file systems): a
//! write in the same tick as the recorded one would leave the times as they were. So a file
//! changed less than [`SETTLED`] ago is not stamped; any later write then gets other times.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use sluice_ltx::TxId;

use super::Shipper;

pub(crate) const NAME: &str = "quiet.stamp";
/// How long the file must have been unchanged to be stamped (coarser than any file system's
/// time granularity).
const SETTLED: std::time::Duration = std::time::Duration::from_secs(3);
const MAGIC: &str = "SLQ1";

/// What a stamp records.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    txid: TxId,
    file: [i64; 7],
}

impl Stamp {
    fn of(txid: TxId, db: &File) -> std::io::Result<Stamp> {
        let m = db.metadata()?;
        let file =
            [m.dev() as i64, m.ino() as i64, m.size() as i64, m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()];
        Ok(Stamp { txid, file })
    }

    /// Whether the file's last change is at least [`SETTLED`] old.
    fn settled(&self) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let newest = self.file[3].max(self.file[5]).max(0) as u64;
        now.as_secs() >= newest + SETTLED.as_secs()
    }

    fn encode(&self) -> String {
        let file: Vec<String> = self.file.iter().map(i64::to_string).collect();
        format!("{MAGIC} {} {}\n", self.txid.0, file.join(" "))
    }

    fn decode(text: &str) -> Option<Stamp> {
        let mut words = text.strip_suffix('\n')?.split(' ');
        if words.next()? != MAGIC {
            return None;
        }
        let txid = TxId(words.next()?.parse().ok()?);
        let mut file = [0i64; 7];
        for v in &mut file {
            *v = words.next()?.parse().ok()?;
        }
        words.next().is_none().then_some(Stamp { txid, file })
    }
}

impl Shipper {
    /// Records the database file as the state at the position. Only while the WAL is empty,
    /// nothing is read ahead, and our read lock is held (all true where it is called); once per
    /// TXID, once the file has settled.
    pub(super) fn stamp_quiet(&mut self) {
        let Some(pos) = self.pos.filter(|_| self.deferred.is_none()) else { return };
        if self.stamped == Some(pos.txid) {
            return;
        }
        let Ok(stamp) = Stamp::of(pos.txid, &self.db_file) else { return };
        if !stamp.settled() {
            // Changed too recently to tell a later write apart: a later sync stamps it.
            return;
        }
        self.stamped = Some(pos.txid);
        let path = self.meta.root().join(NAME);
        let tmp = path.with_extension("tmp");
        let written =
            self.meta.perms().write(&tmp, stamp.encode().as_bytes()).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            // A full disk leaves a partial temp file: never keep one behind. Without a stamp
            // the next start uploads a full image: slower, never wrong.
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(error = %e, "could not save the quiet stamp");
        }
    }

    /// Resumes at `base` (the newest local file's TXID, `commit` pages) when the WAL is empty
    /// and the stamp says the database file is as it was then. True if resumed. Called with
    /// our read lock held.
    pub(super) fn resume_quiet(&mut self, base: TxId, commit: u32) -> bool {
        let path = self.meta.root().join(NAME);
        let Some(stamp) = std::fs::read_to_string(&path).ok().and_then(|t| Stamp::decode(&t)) else { return false };
        let Ok(now) = Stamp::of(base, &self.db_file) else { return false };
        if stamp != now {
            return false;
        }
        tracing::info!(txid = %base, "resuming: the WAL is empty and the database file is as the last capture left it");
        // As after a full image read with no WAL: the next generation starts at its header.
        self.resume_at_header(base, (0, 0), (0, 0), commit);
        self.stamped = Some(base);
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any stamp round-trips; other text decodes to nothing, never a panic.
        #[test]
        fn encode_decode(txid in any::<u64>(), file in any::<[i64; 7]>(), noise in ".{0,80}") {
            let s = Stamp { txid: TxId(txid), file };
            prop_assert_eq!(Stamp::decode(&s.encode()), Some(s));
            let _ = Stamp::decode(&noise);
        }
    }

    #[test]
    fn torn_or_foreign_stamps_are_refused() {
        let s = Stamp { txid: TxId(7), file: [1, 2, 3, 4, 5, 6, 7] }.encode();
        assert!(Stamp::decode(&s[..s.len() - 3]).is_none());
        assert!(Stamp::decode(&s.replace(MAGIC, "SLQ0")).is_none());
        assert!(Stamp::decode(&s.replace('\n', " 8\n")).is_none());
    }
}
