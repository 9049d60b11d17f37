//! `secure-media fetch`: download media through the middleware.

use std::io::{IsTerminal, Write};

use http::{header, StatusCode};
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
    let progress = args.output.is_some() && std::io::stderr().is_terminal();
    let mut received: u64 = 0;
    let mut checked = false;
    let cut_off = |error| network_failure(&args.url, error);
    while let Some(chunk) = response.chunk().await.map_err(|e| access.redact_failure(cut_off(e)))? {
        if !checked {
            check_media(&content_type, &chunk).map_err(Failure::not_media)?;
            checked = true;
        }
        sink.write_all(&chunk).await.map_err(|e| Failure::other(e.to_string()))?;
        received += chunk.len() as u64;
        if progress {
            let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
            eprint!("\r{received}{of} bytes");
            let _ = std::io::stderr().flush();
        }
    }
    if !checked {
        check_media(&content_type, &[]).map_err(Failure::not_media)?;
    }
    sink.flush().await.map_err(|e| Failure::other(e.to_string()))?;
    if progress {
        eprintln!();
    }
    if args.verbose {
        eprintln!("-> {received} bytes of {content_type}");
    }
    Ok(())
}
