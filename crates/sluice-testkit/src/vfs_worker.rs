//! A Python process (Debian's, which can load extensions) on the real extension, driven one
//! command at a time: for tests with several processes on one replica.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use crate::process::{ChildGuard, wait_until};
use crate::{peer, vfs};

/// Upper bound for one command or one wait (a safety net, not an expectation).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A Python process on the real extension that runs commands read from stdin, one per line,
/// tab-separated: `open NAME URI`, `close NAME`, `q NAME SQL` (rows as `a,b;c,d`),
/// `exit`. Each command answers one line: `ok[\tvalue]` or `err\t<SQLITE_…>\t<message>`.
const SCRIPT: &str = r#"
import os, sqlite3, sys
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
conns = {}
def reply(*parts):
    sys.stdout.write("\t".join(str(p).replace("\t", " ").replace("\n", " ") for p in parts) + "\n")
    sys.stdout.flush()
reply("ready", os.getpid())
for line in sys.stdin:
    parts = line.rstrip("\n").split("\t")
    op = parts[0]
    try:
        if op == "open":
            conns[parts[1]] = sqlite3.connect(parts[2], uri=True, isolation_level=None, timeout=30)
            reply("ok")
        elif op == "close":
            conns.pop(parts[1]).close()
            reply("ok")
        elif op == "q":
            rows = conns[parts[1]].execute(parts[2]).fetchall()
            reply("ok", ";".join(",".join(str(v) for v in r) for r in rows))
        elif op == "exit":
            for c in conns.values():
                c.close()
            reply("ok")
            break
        else:
            reply("err", "BADOP", op)
    except sqlite3.Error as e:
        reply("err", getattr(e, "sqlite_errorname", None) or type(e).__name__, e)
    except Exception as e:
        reply("err", type(e).__name__, e)
"#;

/// What a command returned: `Ok(value)` or `Err((SQLite error name, message))`.
pub type Answer = Result<String, (String, String)>;

/// One worker process.
pub struct VfsWorker {
    /// Its name in messages and in its log file's name.
    pub name: String,
    /// The process.
    pub guard: ChildGuard,
    /// Its pid.
    pub pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
}

impl VfsWorker {
    /// Starts a worker on the debug extension (its stderr, the extension's log at info level,
    /// goes to `<dir>/<name>.log`) and waits until it loaded the extension.
    pub fn spawn(name: &str, dir: &Path) -> VfsWorker {
        VfsWorker::spawn_with_env(name, dir, &[])
    }

    /// As [`VfsWorker::spawn`], with `env` added to the process's environment (credentials,
    /// `STORAGE_EMULATOR_HOST`…).
    pub fn spawn_with_env(name: &str, dir: &Path, env: &[(String, String)]) -> VfsWorker {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("create worker log");
        let so = vfs::debug_so();
        let mut cmd = peer::python_command();
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg(so.with_extension(""))
            .env("SLUICE_LOG_LEVEL", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(f);
        let mut guard = ChildGuard::spawn(&mut cmd);
        let stdin = guard.inner().stdin.take();
        let stdout = guard.inner().stdout.take().expect("worker stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = guard.id();
        let mut w = VfsWorker { name: name.to_string(), guard, pid, stdin, lines, log };
        let ready = w.recv_line();
        assert_eq!(ready, format!("ready\t{pid}"), "worker {name}; log:\n{}", w.log_text());
        w
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn recv_line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("worker {} did not answer within {PATIENCE:?}; log:\n{}", self.name, self.log_text())
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "worker {} exited ({:?}); log:\n{}",
                self.name,
                self.guard.wait_timeout(Duration::from_secs(5)),
                self.log_text()
            ),
        }
    }

    /// Sends a command without waiting for its answer (to start two at once).
    pub fn send(&mut self, parts: &[&str]) {
        let line = parts.join("\t");
        assert!(!line.contains('\n'), "a command is one line: {line:?}");
        let stdin = self.stdin.as_mut().expect("worker stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to worker {}: {e}; log:\n{}", self.name, self.log_text()));
    }

    /// The answer to the last command sent.
    pub fn answer(&mut self) -> Answer {
        let line = self.recv_line();
        let mut parts = line.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ok"), v, None) => Ok(v.unwrap_or_default().to_string()),
            (Some("err"), Some(name), msg) => Err((name.to_string(), msg.unwrap_or_default().to_string())),
            _ => panic!("worker {}: unexpected answer {line:?}", self.name),
        }
    }

    /// Sends a command and returns its answer.
    pub fn call(&mut self, parts: &[&str]) -> Answer {
        self.send(parts);
        self.answer()
    }

    /// Runs `sql` on connection `conn`, which must succeed; rows as `a,b;c,d`.
    #[track_caller]
    pub fn q(&mut self, conn: &str, sql: &str) -> String {
        self.call(&["q", conn, sql])
            .unwrap_or_else(|e| panic!("worker {}: {sql}: {e:?}; log:\n{}", self.name, self.log_text()))
    }

    /// Opens connection `conn` on `uri`, which must succeed.
    #[track_caller]
    pub fn open(&mut self, conn: &str, uri: &str) {
        if let Err(e) = self.call(&["open", conn, uri]) {
            panic!("worker {}: open {uri}: {e:?}; log:\n{}", self.name, self.log_text());
        }
    }

    /// Closes connection `conn`.
    #[track_caller]
    pub fn close(&mut self, conn: &str) {
        if let Err(e) = self.call(&["close", conn]) {
            panic!("worker {}: close {conn}: {e:?}; log:\n{}", self.name, self.log_text());
        }
    }

    /// `PRAGMA sluice_write_enabled` of connection `conn`.
    #[track_caller]
    pub fn write_enabled(&mut self, conn: &str) -> bool {
        match self.q(conn, "PRAGMA sluice_write_enabled").as_str() {
            "1" => true,
            "0" => false,
            v => panic!("worker {}: PRAGMA sluice_write_enabled = {v:?}", self.name),
        }
    }

    /// Opens `conn` until it is a writing connection (the lease it waits for became free);
    /// connections that came back read-only are closed again.
    #[track_caller]
    pub fn open_until_writing(&mut self, conn: &str, uri: &str) {
        let writing = wait_until(PATIENCE, || {
            self.open(conn, uri);
            if self.write_enabled(conn) {
                return true;
            }
            self.close(conn);
            std::thread::sleep(Duration::from_millis(200));
            false
        });
        assert!(writing, "worker {}: still read-only after {PATIENCE:?}; log:\n{}", self.name, self.log_text());
    }

    /// `SELECT sluice_sync()` on write-mode connection `conn`: the replica's TXID after it.
    #[track_caller]
    pub fn sync(&mut self, conn: &str) -> u64 {
        let hex = self.q(conn, "SELECT sluice_sync()");
        assert_eq!(hex.len(), 16, "worker {}: sluice_sync() = {hex:?}", self.name);
        u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("sluice_sync() = {hex:?}: {e}"))
    }

    /// Closes every connection and waits for a clean exit.
    #[track_caller]
    pub fn exit(mut self) {
        assert_eq!(self.call(&["exit"]), Ok(String::new()), "log:\n{}", self.log_text());
        drop(self.stdin.take());
        let status = self.guard.wait_timeout(PATIENCE);
        assert!(
            status.is_some_and(|s| s.success()),
            "worker {} exit: {status:?}; log:\n{}",
            self.name,
            self.log_text()
        );
    }
}
