//! Tracing setup: human-readable or JSON lines, filtered by `CLAWX_LOG`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryArgs};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so
/// tests can call it freely.
pub fn init(args: &TelemetryArgs) {
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match args.log_format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().with_target(true)).try_init(),
    };
    // Already installed (tests, or an embedding program): keep the existing one.
    drop(result);
}
