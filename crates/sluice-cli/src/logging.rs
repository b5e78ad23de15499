//! Structured logs on stderr. Level from `--log-level`, else `SLUICE_LOG_LEVEL`,
//! `LITESTREAM_LOG_LEVEL` or `LOG_LEVEL` (Litestream's name), else info.

use tracing_subscriber::EnvFilter;

pub fn init(flag: Option<&str>) {
    let level = flag
        .map(str::to_string)
        .or_else(|| std::env::var("SLUICE_LOG_LEVEL").ok())
        .or_else(|| std::env::var("LITESTREAM_LOG_LEVEL").ok())
        .or_else(|| std::env::var("LOG_LEVEL").ok())
        .unwrap_or_else(|| "info".into())
        .to_lowercase();
    let filter = EnvFilter::try_new(format!("warn,sluice={level},sluice_engine={level},sluice_storage={level}"))
        .unwrap_or_else(|_| EnvFilter::new("warn,sluice=info,sluice_engine=info,sluice_storage=info"));
    // Colours only on a terminal: log files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// The error and its causes, skipping causes whose text a previous message already includes
/// (library errors often embed their source, and object_store errors repeat theirs).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
