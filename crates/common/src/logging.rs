//! Diagnostics through `tracing`, to `logFile` or stderr — never stdout,
//! which carries the CNI result.

use std::fs::OpenOptions;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// Level used when the config sets none.
pub const DEFAULT_LEVEL: &str = "warn";

/// Maps the reference plugins' level names ("panic", "verbose", ...) to tracing's.
fn filter_for(level: &str) -> EnvFilter {
    let level = match level.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => "error",
        "warning" | "warn" => "warn",
        "info" => "info",
        "debug" | "verbose" => "debug",
        "trace" => "trace",
        _ => DEFAULT_LEVEL,
    };
    EnvFilter::new(level)
}

/// Installs the global subscriber. A log file that cannot be opened falls back
/// to stderr: logging must never fail a CNI call.
pub fn init(log_file: Option<&str>, log_level: Option<&str>) {
    let filter = filter_for(log_level.unwrap_or(DEFAULT_LEVEL));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    let file = log_file.and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    let _ = match file {
        Some(f) => builder.with_writer(Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
