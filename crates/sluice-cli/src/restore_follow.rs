//! The parts of `sluice restore` after the plan: `--follow`, `--integrity-check`, `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use sluice_engine::restore::follow::{self, Follower};
use sluice_engine::restore::{self, RestoreOptions, RestoreSummary, Target};
use sluice_storage::{ReplicaClient, StoreKind};
use tokio::signal::unix::{SignalKind, signal};

/// `--integrity-check`: what to run on the restored database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IntegrityCheck {
    None,
    /// `PRAGMA quick_check`.
    Quick,
    /// `PRAGMA integrity_check`.
    Full,
}

impl IntegrityCheck {
    fn name(self) -> &'static str {
        match self {
            IntegrityCheck::None => "none",
            IntegrityCheck::Quick => "quick",
            IntegrityCheck::Full => "full",
        }
    }
}

/// What `--json` prints (Litestream's fields, then Sluice's).
#[derive(serde::Serialize)]
struct Report<'a> {
    db_path: &'a Path,
    replica: &'static str,
    txid: String,
    duration_ms: u128,
    integrity_check: &'static str,
    page_size: u32,
    page_count: u32,
    files: u64,
    bytes: u64,
    follow: bool,
}

/// How a restore ended, for the summary line or `--json`.
pub struct Outcome<'a> {
    pub client: &'a ReplicaClient,
    pub out: &'a Path,
    pub txid: sluice_ltx::TxId,
    pub page_size: u32,
    pub page_count: u32,
    pub files: u64,
    pub bytes: u64,
    pub check: IntegrityCheck,
    pub follow: bool,
    pub started: Instant,
}

/// Prints the summary: one line on stderr, or JSON on stdout.
pub fn report(o: &Outcome<'_>, json: bool) -> Result<()> {
    if !json {
        eprintln!(
            "{} {} to TXID {} ({} files, {} bytes; {} pages of {} bytes) in {:.2}s",
            if o.follow { "followed" } else { "restored" },
            o.out.display(),
            o.txid,
            o.files,
            o.bytes,
            o.page_count,
            o.page_size,
            o.started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let r = Report {
        db_path: o.out,
        replica: match o.client.kind() {
            StoreKind::File => "file",
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gs",
            StoreKind::Azure => "abs",
        },
        txid: o.txid.to_string(),
        duration_ms: o.started.elapsed().as_millis(),
        integrity_check: o.check.name(),
        page_size: o.page_size,
        page_count: o.page_count,
        files: o.files,
        bytes: o.bytes,
        follow: o.follow,
    };
    println!("{}", serde_json::to_string_pretty(&r).context("format JSON summary")?);
    Ok(())
}

/// Runs `PRAGMA quick_check`/`integrity_check` on `out`; on failure deletes the output (and
/// its `-wal`, `-shm` and `-txid`) and returns the error.
pub fn integrity_check(out: &Path, mode: IntegrityCheck) -> Result<()> {
    let pragma = match mode {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "quick_check",
        IntegrityCheck::Full => "integrity_check",
    };
    let problems = run_check(out, pragma);
    let problems = match problems {
        Ok(p) if p.is_empty() => return Ok(()),
        Ok(p) => p.join("; "),
        Err(e) => crate::logging::chain(&e),
    };
    for p in [out.to_path_buf(), suffixed(out, "-wal"), suffixed(out, "-shm"), follow::txid_path(out)] {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove");
        }
    }
    bail!("integrity check ({pragma}) of {} failed, output deleted: {problems}", out.display())
}

/// The check's complaints (empty when it says `ok`).
pub(crate) fn run_check(out: &Path, pragma: &str) -> Result<Vec<String>> {
    // immutable=1: nothing writes the file during the check, and a WAL-mode header must not
    // make a read-only check create -wal/-shm files beside it.
    let abs = std::path::absolute(out)?;
    let path = abs.to_str().with_context(|| format!("non-UTF-8 path {}", abs.display()))?;
    let uri = format!("file:{}?immutable=1", path.replace('%', "%25").replace('?', "%3f").replace('#', "%23"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(uri, flags).with_context(|| format!("open {}", out.display()))?;
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}"))?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(if rows == ["ok"] { Vec::new() } else { rows })
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Settings of `restore --follow`.
pub struct FollowArgs {
    pub interval: Duration,
    pub force: bool,
    pub check: IntegrityCheck,
    pub json: bool,
    pub opts: RestoreOptions,
}

/// `restore --follow`: restore (or resume from `<out>-txid`), then apply new files in place
/// until SIGINT/SIGTERM.
pub async fn run(client: ReplicaClient, out: PathBuf, a: FollowArgs) -> Result<ExitCode> {
    // Handlers first, so a signal during the initial restore is not fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let started = Instant::now();
    let sidecar = follow::read_txid_file(&out)?;
    let resuming = out.exists() && !a.force;
    let (mut follower, initial) = if resuming {
        let Some(txid) = sidecar else {
            bail!(
                "{} exists but {} does not, so it was not written by restore --follow; \
                 use --force to replace it",
                out.display(),
                follow::txid_path(&out).display()
            );
        };
        integrity_check(&out, a.check)?;
        let f = Follower::resume(client.clone(), &out, txid)
            .await
            .with_context(|| format!("cannot resume following {}", out.display()))?;
        tracing::info!(txid = %txid, output = %out.display(), "resuming follow");
        (f, None)
    } else {
        // A stale sidecar must never describe the new file, even after a crash right here.
        follow::remove_txid_file(&out)?;
        let plan = restore::plan_restore(&client, Target::Latest)
            .await
            .with_context(|| format!("cannot restore from {}", client.description()))?;
        let (summary, image, counter) = restore::restore_for_follow(&client, plan, &out, &a.opts)
            .await
            .with_context(|| format!("restore from {} to {} failed", client.description(), out.display()))?;
        integrity_check(&out, a.check)?;
        follow::write_txid_file(&out, summary.txid)?;
        eprintln!("restored {} to TXID {}; following {}", out.display(), summary.txid, client.description());
        (Follower::new(client.clone(), out.clone(), image, counter), Some(summary))
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    follower
        .run(a.interval, shutdown)
        .await
        .with_context(|| format!("following {} into {} failed", client.description(), out.display()))?;
    let (page_count, page_size) = follower.size();
    let (init_files, init_bytes) = initial.as_ref().map_or((0, 0), plan_totals);
    report(
        &Outcome {
            client: &client,
            out: &out,
            txid: follower.txid(),
            page_size,
            page_count,
            files: init_files + follower.stats().files,
            bytes: init_bytes + follower.stats().bytes,
            check: a.check,
            follow: true,
            started,
        },
        a.json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Files and bytes of a restore plan.
pub fn plan_totals(s: &RestoreSummary) -> (u64, u64) {
    (s.plan.len() as u64, s.plan.iter().map(|f| f.size).sum())
}
