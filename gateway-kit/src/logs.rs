//! Logs: `RUST_LOG` decides what is written (default `info`); text has colours only on a
//! terminal (and never with `NO_COLOR`); `--log-format json` writes one object per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the process-wide subscriber, writing to standard error.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).with_target(false).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
