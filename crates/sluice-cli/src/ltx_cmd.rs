//! `sluice ltx FILE...`: print each file's header, page count, TXID range and checksums,
//! verifying it fully; exits non-zero if any file is corrupt.
//! `sluice ltx REPLICA`: list the replica's files per level, like `litestream ltx`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use sluice_ltx::{FileSummary, verify};

/// Arguments of `sluice ltx`.
#[derive(clap::Args)]
pub struct Args {
    /// LTX files to inspect, or one replica (URL, replica directory, or database path).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// With a replica: the level to list (0-9), or "all".
    #[arg(long, default_value = "all")]
    level: String,
    /// Config file, for a database path.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// With a replica: one JSON object per file, one per line, instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    if let [one] = &args.paths[..] {
        let s = one.to_string_lossy();
        if crate::restore_cmd::is_url(&s) || !one.is_file() {
            return list_replica(&s, &args).await;
        }
    }
    let mut out = std::io::stdout().lock();
    let mut all_ok = true;
    for path in &args.paths {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        match verify(std::io::BufReader::new(file)) {
            Ok(s) => print_summary(&mut out, &path.display().to_string(), &s)?,
            Err(e) => {
                all_ok = false;
                writeln!(out, "{}: CORRUPT ({size} bytes): {e}", path.display())?;
            }
        }
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_summary(out: &mut impl Write, name: &str, s: &FileSummary) -> std::io::Result<()> {
    let h = &s.header;
    let ts = chrono::DateTime::from_timestamp_millis(h.timestamp_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| h.timestamp_ms.to_string());
    writeln!(out, "{name}: ok")?;
    writeln!(
        out,
        "  txid range      {}-{}{}",
        h.min_txid,
        h.max_txid,
        if h.is_snapshot() { " (snapshot)" } else { "" }
    )?;
    writeln!(out, "  flags           {:#010x}", h.flags)?;
    writeln!(out, "  page size       {}", h.page_size)?;
    writeln!(out, "  commit          {} pages", h.commit)?;
    writeln!(out, "  pages           {}", s.pgnos.len())?;
    writeln!(out, "  timestamp       {ts}")?;
    writeln!(
        out,
        "  wal             offset {} size {} salts {:08x} {:08x}",
        h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2
    )?;
    writeln!(out, "  pre-apply       {:016x}", h.pre_apply_checksum)?;
    writeln!(out, "  post-apply      {:016x}", s.trailer.post_apply_checksum)?;
    writeln!(out, "  file checksum   {:016x} (verified)", s.trailer.file_checksum)?;
    writeln!(out, "  size            {} bytes", s.size)?;
    Ok(())
}

async fn list_replica(target: &str, args: &Args) -> Result<ExitCode> {
    let client = crate::restore_cmd::client_for(target, args.config.as_deref(), true)?;
    let levels: Vec<u8> = if args.level == "all" {
        (0..=9).collect()
    } else {
        vec![args.level.parse().ok().filter(|l| *l <= 9).with_context(|| format!("invalid --level {:?}", args.level))?]
    };
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "level\tmin_txid\tmax_txid\tsize\tcreated")?;
    }
    for level in levels {
        let files = client
            .list_level(level)
            .await
            .with_context(|| format!("list level {level} of {}", client.description()))?;
        for f in files {
            let created = f.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            if args.json {
                // TXIDs as in file names; every value is plain, so no escaping is needed.
                writeln!(
                    out,
                    "{{\"level\":{},\"min_txid\":\"{}\",\"max_txid\":\"{}\",\"size\":{},\"created\":\"{created}\"}}",
                    f.level, f.min_txid, f.max_txid, f.size
                )?;
                continue;
            }
            writeln!(out, "{}\t{}\t{}\t{}\t{}", f.level, f.min_txid, f.max_txid, f.size, created)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
