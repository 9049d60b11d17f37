//! `secure-media doctor`: the vendor's Troubleshooting section as a command.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secure_media_core::presigned::expiry_of;
use secure_media_core::{FileAccessToken, MediaUrl, SecureMediaMode, FAT_PARAM};
use url::Url;

use crate::access::{hosts, login, login_failure, network_failure, shown_url, Setup, TokenInput};
use crate::args::{DoctorArgs, Mode};
use crate::fetch::send_failure;
use crate::Failure;

fn ago(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", human(d)),
        Err(e) => format!("in {}", human(e.duration())),
    }
}

/// `5m 12s`, `3h 4m`: whole seconds under an hour, whole minutes beyond.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let whole = if s < 3600 { s } else { s - s % 60 };
    humantime::format_duration(Duration::from_secs(whole)).to_string()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&mut self, text: impl AsRef<str>) {
        println!("ok       {}", text.as_ref());
    }
    fn note(&mut self, text: impl AsRef<str>) {
        println!("note     {}", text.as_ref());
    }
    fn problem(&mut self, text: impl AsRef<str>, fix: impl AsRef<str>) {
        self.problems += 1;
        println!("problem  {}\n         fix: {}", text.as_ref(), fix.as_ref());
    }
}

async fn check_token(setup: &Setup<'_>, allow_http: bool, report: &mut Report) -> bool {
    let now = SystemTime::now();
    let token = match &setup.token {
        TokenInput::Given(token) => match FileAccessToken::new(token.clone()) {
            Ok(token) => token,
            Err(error) => {
                report.problem(
                    format!("the FAT is unusable: {error}"),
                    "log in again and pass the \"fat\" of the login answer",
                );
                return false;
            }
        },
        TokenInput::Login { endpoint, uid } => match login(&setup.client, endpoint, uid, allow_http).await {
            Ok(token) => {
                report.ok(format!("logged in at {} as {uid}", shown_url(endpoint)));
                token
            }
            Err(error) => {
                let failure = login_failure(endpoint, &error);
                let fix = failure.hint().unwrap_or("check --login (the login endpoint) and that the server is running");
                report.problem(failure.message(), fix);
                return false;
            }
        },
    };
    match token.expires_at() {
        // Strict here (no clock-skew allowance): the doctor says what the server will see.
        Some(exp) if exp <= now => {
            report.problem(
                format!("the FAT expired {} (at unix {})", ago(exp, now), unix(exp)),
                "log in again: the SDK refreshes the FAT on login",
            );
            return false;
        }
        Some(exp) => report.ok(format!("the FAT is valid until unix {} ({})", unix(exp), ago(exp, now))),
        None => report.note("the FAT is opaque (not a JWT): its expiry is unknown"),
    }
    if let Some(sub) = token.subject() {
        report.note(format!("the FAT speaks for {sub:?}"));
    }
    true
}

fn check_url(args: &DoctorArgs, report: &mut Report) -> Option<Url> {
    let Ok(url) = Url::parse(&args.url) else {
        report.problem(format!("{:?} is not a valid URL", args.url), "pass an absolute https:// media URL");
        return None;
    };
    let hosts = hosts(&args.access).ok()?;
    let host = url.host_str().unwrap_or("");
    let host_port = url.port().map(|p| format!("{host}:{p}")).unwrap_or_else(|| host.to_owned());
    let view = MediaUrl::from_url(&url)?;
    let blocked_http =
        url.scheme() == "http" && !hosts.allows_http() && hosts.clone().allowing_http().matches_url(&url);
    if blocked_http {
        report.problem(
            "the URL is plain http://: tokens only go to https:// secure hosts",
            "use the https:// URL (or --allow-http for a local server)",
        );
    } else if !hosts.matches_url(&url) {
        report.problem(
            format!("{host_port} is not a configured secure host: no token is sent to it"),
            format!("if it is your secure media host, add --secure-host {host_port}"),
        );
    } else {
        report.ok(format!("{host_port} is a secure host"));
    }
    let mode: SecureMediaMode = args.access.mode.into();
    if view.has_param(FAT_PARAM) && mode != SecureMediaMode::Embedded {
        report.problem(
            format!("this URL already carries ?fat= but the mode is {mode}"),
            "pass the clean URL (without fat=): the token would otherwise travel twice",
        );
    }
    if view.has_param("Signature") || view.has_param("Expires") {
        match expiry_of(&url) {
            Some(exp) if exp <= SystemTime::now() => report.problem(
                format!("presigned URL expired at unix {} ({})", unix(exp), ago(exp, SystemTime::now())),
                "fetch a new one: pass the clean URL and --mode presigned",
            ),
            Some(exp) => report.note(format!("this is already a presigned URL, valid until unix {}", unix(exp))),
            None => report.note("this URL carries a signature without a readable expiry"),
        }
    }
    Some(url)
}

async fn try_mode(setup: &Setup<'_>, url: &str, mode: Mode) -> Result<u16, Failure> {
    let access = setup.access(mode).await?;
    let response = crate::fetch::client(&access)
        .get(url)
        .send()
        .await
        .map_err(|error| access.redact_failure(send_failure(url, error)))?;
    Ok(response.status().as_u16())
}

pub(crate) async fn run(args: DoctorArgs) -> Result<(), Failure> {
    let setup = Setup::read(&args.access)?;
    let mut report = Report { problems: 0 };
    let token_ok = check_token(&setup, args.access.allow_http, &mut report).await;
    let url = check_url(&args, &mut report);
    let Some(url) = url else {
        return Err(Failure::refused(format!("{} problem(s) found", report.problems)));
    };
    let chosen = args.access.mode;
    let mut results = Vec::new();
    if token_ok {
        for mode in [Mode::Embedded, Mode::HeaderBased, Mode::Presigned] {
            if matches!(mode, Mode::Presigned) && args.access.presign_endpoint.is_none() {
                continue;
            }
            results.push((mode, try_mode(&setup, &args.url, mode).await));
        }
    }
    // Without any proof, through the same client (the same trusted CAs, no redirects followed).
    let plain = setup
        .client
        .get(url.as_str())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| network_failure(url.as_str(), e));
    println!("\ntried:");
    for (mode, result) in &results {
        let mark = if std::mem::discriminant(mode) == std::mem::discriminant(&chosen) { " (chosen)" } else { "" };
        println!("  {:<10} {}{mark}", SecureMediaMode::from(*mode).to_string(), show(result));
    }
    println!("  {:<10} {}", "no proof", show(&plain));
    let worked = |m: &Mode| {
        results
            .iter()
            .any(|(mode, r)| std::mem::discriminant(mode) == std::mem::discriminant(m) && matches!(r, Ok(200..=299)))
    };
    // A request that did not complete says why (the cause chain), and what to do if we know.
    let unreachable = results
        .iter()
        .map(|(_, result)| result)
        .chain([&plain])
        .find_map(|result| result.as_ref().err().filter(|failure| failure.is_network()));
    println!();
    if worked(&chosen) {
        report.ok(format!("{} mode loads this URL", SecureMediaMode::from(chosen)));
    } else if let Some((other, _)) = results.iter().find(|(m, _)| worked(m)) {
        let name = SecureMediaMode::from(*other).to_string();
        report.problem(
            format!("{} mode fails but {name} works", SecureMediaMode::from(chosen)),
            format!("use --mode {name} (the server's configured mode)"),
        );
    } else if let Some(failure) = unreachable {
        let fix = failure.hint().unwrap_or("check the URL's host and port, and that the server is running");
        report.problem(failure.message(), fix);
    } else if token_ok {
        report
            .problem("no mode loads this URL", "check the URL, the secure host and that the token belongs to this app");
    }
    if matches!(plain, Ok(200..=299)) {
        report.note("the URL loads without any proof: Token Based File Access is not enabled for it");
    }
    if report.problems == 0 {
        println!("no problems found");
        Ok(())
    } else {
        Err(Failure::refused(format!("{} problem(s) found", report.problems)))
    }
}

fn show(result: &Result<u16, Failure>) -> String {
    match result {
        Ok(status) => format!("HTTP {status}"),
        Err(failure) => format!("error: {}", failure.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_humantime_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(ago(now - Duration::from_millis(312_400), now), "5m 12s ago");
        assert_eq!(ago(now + Duration::from_secs(3 * 3600 + 4 * 60 + 59), now), "in 3h 4m");
        assert_eq!(ago(now - Duration::from_secs(2 * 86_400 + 60), now), "2days 1m ago");
    }
}
