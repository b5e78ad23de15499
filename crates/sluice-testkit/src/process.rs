//! Child processes for tests: killed on drop, waited on with deadlines.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A spawned child that is killed (SIGKILL) and reaped when dropped, so a failing test never
/// leaks a `litestream replicate` or a `sluice` process.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd` (panics with the program name if it cannot be started).
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let what = format!("{:?}", cmd.get_program());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        ChildGuard { child: Some(child), what }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("BUG: child taken before drop")
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("BUG: child taken").id()
    }

    /// Access to the child (e.g. to take its piped stdout).
    pub fn inner(&mut self) -> &mut Child {
        self.child()
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let what = self.what.clone();
        self.child().try_wait().unwrap_or_else(|e| panic!("wait for {what}: {e}"))
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap. Returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let child = self.child();
        let _ = child.kill();
        child.wait().expect("wait after kill")
    }

    /// Sends a signal by name (`"INT"`, `"TERM"`, …) through `kill(1)`, for graceful shutdown.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
        assert!(status.success() || self.try_wait().is_some(), "kill -{signal} {pid} failed");
    }

    /// Sends `signal`, waits up to `timeout` for a clean exit, then kills. Returns the status
    /// and whether the child exited on its own.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> (ExitStatus, bool) {
        if let Some(status) = self.try_wait() {
            return (status, true);
        }
        self.signal(signal);
        match self.wait_timeout(timeout) {
            Some(status) => (status, true),
            None => (self.kill(), false),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` to completion with stdout and stderr captured, killing it after `timeout`.
///
/// # Panics
/// If it cannot be spawned or does not finish in time (the panic message includes what it printed
/// so far).
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(cmd);
    let out = drain(guard.inner().stdout.take());
    let err = drain(guard.inner().stderr.take());
    let status = guard.wait_timeout(timeout);
    let status = match status {
        Some(s) => s,
        None => {
            guard.kill();
            let (out, err) = (join(out), join(err));
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
    };
    Output { status, stdout: join(out), stderr: join(err) }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn join(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes; returns whether it did.
/// (For waiting on effects such as "the replica has a file", not for timing assertions.)
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_on_drop_and_times_out() {
        let mut g = ChildGuard::spawn(Command::new("sleep").arg("30"));
        assert!(g.wait_timeout(Duration::from_millis(50)).is_none());
        let pid = g.id();
        drop(g);
        // The pid is reaped: /proc/<pid> is gone (or reused by an unrelated process, which
        // would not be a zombie `sleep`).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{stat}");

        let out = output_with_timeout(
            Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");

        let mut g = ChildGuard::spawn(Command::new("sleep").arg("30"));
        let (status, clean) = g.stop("TERM", Duration::from_secs(10));
        assert!(clean && !status.success());
    }
}
