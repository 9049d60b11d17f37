//! `secure-media`: run the reference server, see what a mode sends, fetch and diagnose secure media.
//!
//! Exit codes: 0 success, 1 other failure, 2 bad flags, 3 refused (401/403) or problems found,
//! 4 network error, 5 the answer is not media.

mod access;
mod args;
mod client;
mod doctor;
mod fetch;
mod resolve;
mod serve;

use std::process::ExitCode;

use clap::Parser;
use secure_media_core::{AccessError, NetworkFailure, TlsFailure};

/// What to do about a server certificate from a CA the client does not know.
const UNKNOWN_CA_HINT: &str = "pass --ca-cert FILE (or set SSL_CERT_FILE) if the server uses a private CA";

/// A one-line reason, what to do about it if we know, and the exit code that goes with it.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
    hint: Option<&'static str>,
}

impl Failure {
    fn new(code: u8, message: String) -> Self {
        let hint = hint_for(&message);
        Self { code, message, hint }
    }
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(2, message.into())
    }
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::new(3, message.into())
    }
    /// A request that did not complete; the message ends with its cause chain
    /// ([`secure_media_core::NetworkError`]'s words).
    pub(crate) fn network(message: impl Into<String>) -> Self {
        Self::new(4, message.into())
    }
    pub(crate) fn not_media(message: impl Into<String>) -> Self {
        Self::new(5, message.into())
    }
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self::new(1, message.into())
    }

    /// An access error from the middleware or a strategy: a refused token is 3, a configuration
    /// that cannot work (an endpoint that may not receive the token) is a usage error, anything
    /// else (the network, a presign endpoint that failed) is 4, as it always was.
    pub(crate) fn access(error: &AccessError) -> Self {
        match error {
            AccessError::Refused { .. } | AccessError::PresignUnauthorized { .. } => Self::refused(error.to_string()),
            AccessError::Config(_) => Self::usage(error.to_string()),
            _ => Self::network(error.to_string()),
        }
    }

    /// The same exit code and hint under another message (the reasons were printed already).
    pub(crate) fn summarized(self, message: String) -> Self {
        Self { message, ..self }
    }

    /// A request that did not complete (exit code 4).
    pub(crate) fn is_network(&self) -> bool {
        self.code == 4
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn hint(&self) -> Option<&'static str> {
        self.hint
    }
}

/// What the user can do about a failure, read from its words: the presign path hands its cause back
/// as text (`AccessError::Presign`), so one rule over the text serves every path alike.
fn hint_for(message: &str) -> Option<&'static str> {
    let unknown_ca = NetworkFailure::Tls(TlsFailure::UnknownIssuer).to_string();
    message.contains(&unknown_ca).then_some(UNKNOWN_CA_HINT)
}

/// The one way a failure reaches the user: the reason with its cause chain, then the hint.
fn print_failure(failure: &Failure) {
    eprintln!("secure-media: {}", failure.message);
    if let Some(hint) = failure.hint {
        eprintln!("hint: {hint}");
    }
}

/// Our crates' decisions on standard error; they never carry a secret.
pub(crate) fn verbose_logs() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let targets = Targets::new()
        .with_target("secure_media_core", LevelFilter::DEBUG)
        .with_target("secure_media_reqwest", LevelFilter::DEBUG);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).without_time().with_target(false);
    let _ = tracing_subscriber::registry().with(layer.with_filter(targets)).try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let outcome = match cli.command {
        args::Command::Serve(args) => serve::run(args).await,
        args::Command::Resolve(args) => resolve::run(args).await,
        args::Command::Fetch(args) => fetch::run(args).await,
        args::Command::Doctor(args) => doctor::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            print_failure(&failure);
            ExitCode::from(failure.code)
        }
    }
}
