//! Rules both ends of the wire must agree on, written once: the name
//! grammar of venues, nodes, zones and metrics ([`name`]), the ledger's
//! event day ([`day`]), the wall clock ([`clock`]), the byte scans of the
//! strict JSON-line readers ([`scan`]), and the process plumbing
//! every binary needs (`shutdown_signal`, `init_tracing`; feature `runtime`).
//!
//! Holds no domain logic and never depends on the node or the aggregator.

#![warn(missing_docs)]

pub mod clock;
pub mod day;
#[cfg(feature = "migrations")]
pub mod migrations;
pub mod name;
pub mod scan;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use clock::{Clock, SystemClock, now_ms};

/// An error and its causes in one line, each cause once: transport errors
/// repeat their source in their own text ("tcp connect error: tcp connect
/// error: Connection refused"), which a person should read only once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    with_causes(e.to_string(), e.source())
}

/// `head` followed by `source` and its causes, each once (see
/// [`error_chain`]); for errors whose own text is not what a person should
/// read first (a gRPC status, say).
pub fn with_causes(head: String, source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut text = head;
    let mut src = source;
    while let Some(cause) = src {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        src = cause.source();
    }
    text
}

/// Resolves when SIGTERM or SIGINT arrives.
#[cfg(feature = "runtime")]
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutdown signal received.");
}

/// Installs the tracing subscriber on stderr: `RUST_LOG` filter (default
/// `default_level`), JSON when `format` is `"json"`, or, with no `format`,
/// when stderr is not a terminal.
#[cfg(feature = "runtime")]
pub fn init_tracing(format: Option<&str>, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::stderr().is_terminal(),
    };
    // Colours only on a terminal: `--log-format text` into a file or a
    // pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        let e = Layer(
            "transport error: tcp connect error",
            Some(Box::new(Layer(
                "tcp connect error",
                Some(Box::new(Layer("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(
            super::error_chain(&e),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }
}
