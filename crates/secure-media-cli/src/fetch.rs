//! `secure-media fetch`: download media through the middleware.

use std::io::IsTerminal;
use std::time::Duration;

use http::{header, StatusCode};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use secure_media_core::{check_media, AccessError, NetworkError, NetworkFailure};
use secure_media_reqwest::SecureMediaMiddleware;
use tokio::io::AsyncWriteExt;

use crate::access::{build, network_failure, shown_url, Access};
use crate::args::FetchArgs;
use crate::Failure;

/// The command's client (see `client.rs`) with the middleware over the flags' strategy.
pub(crate) fn client(access: &Access) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(access.client.clone())
        .with(SecureMediaMiddleware::new(access.media.strategy()))
        .build()
}

/// Why a request through the middleware failed: the clean URL and the cause chain.
pub(crate) fn send_failure(url: &str, error: reqwest_middleware::Error) -> Failure {
    match error {
        reqwest_middleware::Error::Reqwest(error) => network_failure(url, error),
        reqwest_middleware::Error::Middleware(error) => match error.downcast_ref::<AccessError>() {
            Some(access) => Failure::access(access),
            None => Failure::network(format!(
                "{}: {}",
                shown_url(url),
                NetworkError::from_chain(error.as_ref(), NetworkFailure::Other)
            )),
        },
    }
}

pub(crate) async fn run(args: FetchArgs) -> Result<(), Failure> {
    if args.verbose {
        crate::verbose_logs();
    }
    let access = build(&args.access).await?;
    let client = client(&access);
    if args.verbose {
        eprintln!("-> {} mode, requesting {}", access.media.mode(), access.redact(&args.url));
    }
    let mut response =
        client.get(&args.url).send().await.map_err(|e| access.redact_failure(send_failure(&args.url, e)))?;
    let status = response.status();
    if args.verbose {
        eprintln!("<- {status}");
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(Failure::refused(format!(
            "refused with {status} after one retry: run `secure-media doctor` with the same flags"
        )));
    }
    if !status.is_success() {
        return Err(Failure::other(format!("the server answered {status}")));
    }
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let total = response.content_length();
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &args.output {
        Some(path) => Box::new(
            tokio::fs::File::create(path).await.map_err(|e| Failure::other(format!("{}: {e}", path.display())))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    // Same rule as ever: a progress bar only for a file, and only when someone watches stderr.
    let progress = if args.output.is_some() && std::io::stderr().is_terminal() {
        progress_bar(total)
    } else {
        ProgressBar::hidden()
    };
    let cut_off = |error| network_failure(&args.url, error);
    let copied = async {
        let mut received: u64 = 0;
        let mut checked = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| access.redact_failure(cut_off(e)))? {
            if !checked {
                check_media(&content_type, &chunk).map_err(|reason| Failure::not_media(reason.to_string()))?;
                checked = true;
            }
            sink.write_all(&chunk).await.map_err(|e| Failure::other(e.to_string()))?;
            received += chunk.len() as u64;
            progress.inc(chunk.len() as u64);
        }
        if !checked {
            check_media(&content_type, &[]).map_err(|reason| Failure::not_media(reason.to_string()))?;
        }
        sink.flush().await.map_err(|e| Failure::other(e.to_string()))?;
        Ok::<u64, Failure>(received)
    }
    .await;
    // Left on screen either way: the whole download, or how far it got before the error below.
    match copied {
        Ok(_) => progress.finish(),
        Err(_) => progress.abandon(),
    }
    let received = copied?;
    if args.verbose {
        eprintln!("-> {received} bytes of {content_type}");
    }
    Ok(())
}

/// With a known length: bar, bytes, rate and time left. Without: a spinner, bytes and rate.
const BAR_TEMPLATE: &str = "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, {eta} left";
const SPINNER_TEMPLATE: &str = "{spinner} {binary_bytes} {binary_bytes_per_sec}";

/// The download's progress on stderr. The templates have no `{msg}` or `{prefix}`, and no message
/// is ever set: nothing but numbers, so no URL (whose query may hold the token) can show up there.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    let (template, bar) = match total {
        Some(total) => (BAR_TEMPLATE, ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())),
        None => (SPINNER_TEMPLATE, ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())),
    };
    // The templates are constants, parsed in a test; indicatif's default style would do otherwise.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    // Redraws a stalled download too: the rate falls and the spinner turns.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_templates_parse_and_show_numbers_only() {
        for template in [BAR_TEMPLATE, SPINNER_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
            assert!(!template.contains("msg") && !template.contains("prefix"), "{template}");
        }
    }
}
