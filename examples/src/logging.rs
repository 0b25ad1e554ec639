//! Logging of the binaries: the one `tracing` subscriber of the process (the library installs
//! none). Text or JSON lines on standard error; colour only when standard error is a terminal
//! and `NO_COLOR` is unset; the filter from `RUST_LOG`, else the binary's default.

use std::io::IsTerminal;

use quay_core::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// The environment variables the binaries read, for their `--help`.
pub const ENVIRONMENT_HELP: &str = "\
Environment:
  QUAY_DISTRIBUTED_STORAGE_PREFERENCE  this instance's storage preference: location ids
                                       separated by spaces, nearest first (overrides the
                                       config's DISTRIBUTED_STORAGE_PREFERENCE)
  RUST_LOG                             what to log, e.g. `info` or `quay_core=debug,info`;
                                       `quay_http::access=off` silences the access log
  NO_COLOR                             set (to anything) for logs without colour; colour is
                                       only ever used when standard error is a terminal";

/// Whether log lines may carry colour: a terminal, and no `NO_COLOR`
/// (<https://no-color.org>: any non-empty value).
pub fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Installs the subscriber: `format`, filtered by `RUST_LOG` or else `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
