//! `secure-media`: run the reference server, see what a mode sends, fetch and diagnose secure media.
//!
//! Exit codes: 0 success, 1 other failure, 2 bad flags, 3 refused (401/403) or problems found,
//! 4 network error, 5 the answer is not media.

mod access;
mod args;
mod doctor;
mod fetch;
mod resolve;
mod serve;

use std::process::ExitCode;

use clap::Parser;

/// A one-line reason and the exit code that goes with it.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self { code: 3, message: message.into() }
    }
    pub(crate) fn network(message: impl Into<String>) -> Self {
        Self { code: 4, message: message.into() }
    }
    pub(crate) fn not_media(message: impl Into<String>) -> Self {
        Self { code: 5, message: message.into() }
    }
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
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
            eprintln!("secure-media: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
