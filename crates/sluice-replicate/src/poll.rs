//! Watching the WAL cheaply: one 48-byte read of SQLite's WAL index (`-shm`) per poll, at a
//! pace that follows the write rate — every 5 ms while the WAL is racing towards the
//! checkpoint threshold, up to 100 ms when it changes slowly or not at all.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// Shortest pause between polls: a checkpoint must start before the WAL reaches the
/// application's auto-checkpoint size, past which SQLite tries a checkpoint after every
/// commit, which a long-held read lock like ours makes fruitless and costly for the app.
pub const MIN_POLL: Duration = Duration::from_millis(5);
/// Longest pause between polls (a quiet database, or one far below the threshold).
pub const MAX_POLL: Duration = Duration::from_millis(100);

/// What one poll saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Frames in the WAL per the index (`mxFrame`), if the index could be read.
    pub frames: Option<u64>,
    /// Something was committed (or the WAL restarted) since the previous poll.
    pub changed: bool,
}

/// Polls the WAL index of one database.
pub struct WalWatch {
    shm_path: PathBuf,
    wal_path: PathBuf,
    /// Stays open for the daemon's lifetime. Closing *any* descriptor of a file drops all of
    /// this process's POSIX locks on it, and SQLite's read locks are POSIX locks on the
    /// `-shm` file: opening and closing it per poll would silently release our read lock and
    /// let the application restart the WAL over frames not yet captured.
    shm: Option<File>,
    /// Bytes 16..40 of the index header: mxFrame, nPage, frame checksum, salts.
    last_header: Option<[u8; 24]>,
    /// Fallback signal when the index cannot be read: the WAL file's length and mtime.
    last_stat: Option<(u64, Option<std::time::SystemTime>)>,
    last_poll: Instant,
    last_frames: u64,
    /// Smoothed WAL growth, frames per second: a single interval is a poor estimate right
    /// after a checkpoint (the poll gap included the checkpoint, the count restarted).
    rate: f64,
}

impl WalWatch {
    /// Watches the `-shm` and `-wal` files next to `db`.
    pub fn new(db: &Path) -> Self {
        let sidecar = |suffix: &str| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        WalWatch {
            shm_path: sidecar("-shm"),
            wal_path: sidecar("-wal"),
            shm: None,
            last_header: None,
            last_stat: None,
            last_poll: Instant::now(),
            last_frames: 0,
            rate: 0.0,
        }
    }

    /// Reads the index header (a stat of the WAL when there is no index yet).
    pub fn observe(&mut self) -> Observation {
        let now = Instant::now();
        let header = self.read_header();
        let (frames, changed) = match header {
            Some(h) => {
                #[allow(clippy::host_endian_bytes)] // the index is in the machine's byte order
                let frames = u64::from(u32::from_ne_bytes([h[0], h[1], h[2], h[3]]));
                let changed = self.last_header != Some(h);
                self.last_header = Some(h);
                (Some(frames), changed)
            }
            None => {
                let stat = std::fs::metadata(&self.wal_path).ok().map(|m| (m.len(), m.modified().ok()));
                let changed = stat != self.last_stat;
                self.last_stat = stat;
                (None, changed)
            }
        };
        self.last_poll = now;
        Observation { frames, changed }
    }

    /// The pause before the next poll: a quarter of the time the WAL needs, at the rate it
    /// has been growing, to reach `threshold` frames.
    pub fn next_delay(
        &mut self,
        obs: Observation,
        since_last: Duration,
        threshold: u64,
        current: Duration,
    ) -> Duration {
        let Some(frames) = obs.frames else {
            return if obs.changed { MIN_POLL } else { (current * 2).min(MAX_POLL) };
        };
        // After a restart the count starts again from zero.
        let grown = if frames >= self.last_frames { frames - self.last_frames } else { frames };
        self.last_frames = frames;
        if grown == 0 {
            self.rate /= 2.0;
            return (current * 2).min(MAX_POLL);
        }
        let now = grown as f64 / since_last.as_secs_f64().max(1e-4);
        // Rising rates count at once, falling ones slowly.
        self.rate = if now >= self.rate { now } else { 0.75 * self.rate + 0.25 * now };
        let eta = threshold.saturating_sub(frames) as f64 / self.rate;
        Duration::from_secs_f64(eta / 4.0).clamp(MIN_POLL, MAX_POLL)
    }

    /// Smoothed WAL growth in frames per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When the previous poll ran.
    pub fn last_poll(&self) -> Instant {
        self.last_poll
    }

    fn read_header(&mut self) -> Option<[u8; 24]> {
        if self.shm.is_none() {
            self.shm = File::open(&self.shm_path).ok();
        }
        let mut h = [0u8; 48];
        self.shm.as_ref()?.read_exact_at(&mut h, 0).ok()?;
        #[allow(clippy::host_endian_bytes)]
        let version = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
        if version != 3_007_000 {
            return None;
        }
        let mut out = [0u8; 24];
        out.copy_from_slice(&h[16..40]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn close(a: Duration, b: Duration) {
        assert!(a.abs_diff(b) < Duration::from_micros(1), "{a:?} != {b:?}");
    }

    fn obs(frames: u64) -> Observation {
        Observation { frames: Some(frames), changed: true }
    }

    #[test]
    fn pace_follows_the_write_rate() {
        let mut w = WalWatch::new(Path::new("/nonexistent/db"));
        let ms = Duration::from_millis;
        // 20,000 frames/s with 900 frames to go: 45 ms away, poll in about 11 ms.
        close(w.next_delay(obs(100), ms(5), 1000, MIN_POLL), ms(11) + Duration::from_micros(250));
        // Racing: at the floor.
        assert_eq!(w.next_delay(obs(900), ms(5), 1000, MIN_POLL), MIN_POLL);
        // Slow writes far below the threshold: at the ceiling.
        let mut w = WalWatch::new(Path::new("/nonexistent/db"));
        w.last_frames = 900;
        assert_eq!(w.next_delay(obs(901), ms(100), 1000, MIN_POLL), MAX_POLL);
        // Nothing new: back off.
        assert_eq!(w.next_delay(obs(901), ms(100), 1000, ms(20)), ms(40));
        assert_eq!(w.next_delay(obs(901), ms(100), 1000, ms(80)), MAX_POLL);
        // A restart counts as growth from zero: 50 frames in 5 ms, 950 to go.
        let mut w = WalWatch::new(Path::new("/nonexistent/db"));
        w.last_frames = 900;
        close(w.next_delay(obs(50), ms(5), 1000, MAX_POLL), ms(23) + Duration::from_micros(750));
        // A falling rate is believed slowly: 10 frames in 5 ms after 10,000 frames/s.
        let d = w.next_delay(obs(60), ms(5), 1000, MIN_POLL);
        close(d, Duration::from_secs_f64(940.0 / (0.75 * 10_000.0 + 0.25 * 2_000.0) / 4.0));
    }

    #[test]
    fn without_an_index_the_wal_stat_decides() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let mut w = WalWatch::new(&db);
        assert_eq!(w.observe(), Observation { frames: None, changed: false });
        std::fs::write(dir.path().join("db-wal"), b"x").unwrap();
        assert_eq!(w.observe(), Observation { frames: None, changed: true });
        assert_eq!(w.observe(), Observation { frames: None, changed: false });
        let d = w.next_delay(Observation { frames: None, changed: true }, MIN_POLL, 1000, MAX_POLL);
        assert_eq!(d, MIN_POLL);
    }
}
