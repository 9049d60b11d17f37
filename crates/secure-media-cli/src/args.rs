//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Run the reference server, see what a mode sends, fetch and diagnose secure media.
#[derive(Parser)]
#[command(name = "secure-media", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the reference secure-media server.
    Serve(ServeArgs),
    /// Print, for each URL, what the mode would request (URL, then headers).
    Resolve(ResolveArgs),
    /// Download media through the secure-media middleware.
    Fetch(FetchArgs),
    /// Diagnose why a media URL fails, and say how to fix it.
    Doctor(DoctorArgs),
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub(crate) addr: SocketAddr,
    /// App id in media paths and FAT claims.
    #[arg(long, default_value = "demo")]
    pub(crate) app_id: String,
    /// Serve files from this directory instead of the built-in samples.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// FAT lifetime (e.g. 90s, 15m, 1h, 1d, "1h 30m"; a plain number is seconds).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub(crate) fat_ttl: Duration,
    /// Presigned URL lifetime (e.g. 15m, 1d, "1h 30m"; a plain number is seconds).
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    pub(crate) url_ttl: Duration,
    /// Serve https with a certificate from a fresh test CA (written to --ca-out for clients).
    #[arg(long)]
    pub(crate) tls: bool,
    /// Where to write the test CA's certificate (default: ca.pem in a new private directory in the
    /// temp dir, secure-media-tls-<port>-<pid>).
    #[arg(long, requires = "tls")]
    pub(crate) ca_out: Option<PathBuf>,
}

/// The access mode on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    /// `?fat=<token>` in the URL.
    Embedded,
    /// `Authorization: Bearer <token>` (also `header`).
    #[value(name = "header-based", alias = "header")]
    HeaderBased,
    /// A presigned URL from the presign endpoint.
    Presigned,
}

impl From<Mode> for secure_media_core::SecureMediaMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Embedded => Self::Embedded,
            Mode::HeaderBased => Self::HeaderBased,
            Mode::Presigned => Self::Presigned,
        }
    }
}

/// How to reach secure media: shared by resolve, fetch and doctor. No `Debug`: it holds the token.
// The token comes from one of --token-file, --token or --login/--uid (at most one), or else from
// SECURE_MEDIA_TOKEN: a flag wins over the environment. The variable is read in access.rs, not by
// clap, whose `env` would count it as given and make it conflict with those flags.
#[derive(Args)]
#[command(group(ArgGroup::new("fat").args(["token_file", "token", "login"]).multiple(false)))]
pub(crate) struct AccessArgs {
    /// The access mode.
    #[arg(long, value_enum, default_value = "embedded")]
    pub(crate) mode: Mode,
    /// A secure host, `host` or `host:port` (repeatable).
    #[arg(long = "secure-host", required = true)]
    pub(crate) secure_hosts: Vec<String>,
    /// Allow plain http:// on the secure hosts, the login endpoint and the presign endpoint (local
    /// servers only: the token could be read on the way).
    #[arg(long)]
    pub(crate) allow_http: bool,
    /// Trust the CA certificates in this PEM file as well as the platform's roots (repeatable; for
    /// a private CA or a test server). The file named by SSL_CERT_FILE, if set, is trusted too.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub(crate) ca_certs: Vec<PathBuf>,
    /// Read the File Access Token from FILE (`-`: standard input); a trailing newline is ignored.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// The File Access Token. Visible to other users in the process list and kept in the shell
    /// history: prefer the SECURE_MEDIA_TOKEN environment variable or --token-file.
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// A login endpoint to get a token from (POST {"uid"}).
    #[arg(long, requires = "uid")]
    pub(crate) login: Option<String>,
    /// The user to log in as.
    #[arg(long, requires = "login")]
    pub(crate) uid: Option<String>,
    /// The presign endpoint (required in presigned mode).
    #[arg(long)]
    pub(crate) presign_endpoint: Option<String>,
    /// Print the token instead of `<redacted>`.
    #[arg(long)]
    pub(crate) show_token: bool,
}

#[derive(Args)]
pub(crate) struct ResolveArgs {
    #[command(flatten)]
    pub(crate) access: AccessArgs,
    /// The media URLs.
    #[arg(required = true)]
    pub(crate) urls: Vec<String>,
}

#[derive(Args)]
pub(crate) struct FetchArgs {
    #[command(flatten)]
    pub(crate) access: AccessArgs,
    /// Write the media here (default: standard output).
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// Show each step (resolution, refusal, refresh, retry, redirect), secrets redacted.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// The media URL.
    pub(crate) url: String,
}

#[derive(Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    pub(crate) access: AccessArgs,
    /// The media URL.
    pub(crate) url: String,
}

/// A duration in humantime's syntax (`90s`, `15m`, `1h`, `1d`, `1h 30m`), or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 90s, 15m, 1h, 1d or \"1h 30m\" ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_combinations_and_plain_seconds() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration(" 7 ").unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn a_bad_duration_says_what_is_expected() {
        for bad in ["h", "1x", "", "-5s", "soon"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("is not a duration like 90s, 15m, 1h, 1d"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
