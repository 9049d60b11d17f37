//! Repository tooling, run as `cargo xtask <command>` (the alias is in `.cargo/config.toml`).
//!
//! ```sh
//! cargo xtask bench-report   # target/criterion -> BENCHMARKS.md's table and benches/ratios.svg,
//!                            # and its gallery.json -> BENCHMARKS.md's gallery section and benches/gallery.svg
//! ```

mod bench_report;
mod gallery_report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// secure-media's repository tooling.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn criterion's results into BENCHMARKS.md's table and benches/ratios.svg, and the gallery
    /// scenario's gallery.json into BENCHMARKS.md's gallery section and benches/gallery.svg.
    BenchReport {
        /// Criterion's output (default: $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion, else
        /// target/criterion: where `cargo bench` wrote it).
        #[arg(long, value_name = "DIR")]
        criterion_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::BenchReport { criterion_dir } => {
            let root = workspace_root();
            let criterion = criterion_dir.unwrap_or_else(|| default_criterion_dir(&root));
            bench_report::run(&criterion, &root)
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root (this crate's parent), whatever directory the command runs from.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Where criterion writes when `cargo bench` runs at the root: the same rule as criterion's.
fn default_criterion_dir(root: &Path) -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return root.join(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("criterion")
}
