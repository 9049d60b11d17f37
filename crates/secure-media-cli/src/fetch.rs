//! `secure-media fetch`: download media through the middleware.

use std::io::{IsTerminal, Write};

use http::{header, StatusCode};
use secure_media_reqwest::{redirect_policy, SecureMediaMiddleware};
use tokio::io::AsyncWriteExt;

use crate::access::{build, Access};
use crate::args::FetchArgs;
use crate::Failure;

/// What the answer is, judged by its content type and its first bytes.
pub(crate) fn media_kind(content_type: &str, head: &[u8]) -> Result<(), String> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let magic_image = head.starts_with(b"\x89PNG\r\n\x1a\n")
        || head.starts_with(&[0xff, 0xd8, 0xff])
        || head.starts_with(b"GIF8")
        || (head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP");
    if essence == "text/html" || head.trim_ascii_start().starts_with(b"<") {
        return Err("the server answered an HTML page (a login page?), not media".into());
    }
    if essence.starts_with("image/") && !magic_image && essence != "image/svg+xml" {
        return Err(format!("the answer says {essence} but its bytes are not an image"));
    }
    let media = ["image/", "video/", "audio/"].iter().any(|p| essence.starts_with(p))
        || matches!(essence.as_str(), "application/octet-stream" | "application/pdf" | "text/plain");
    if media {
        Ok(())
    } else {
        Err(format!("the answer is {essence:?}, not media"))
    }
}

pub(crate) fn client(access: &Access) -> Result<reqwest_middleware::ClientWithMiddleware, Failure> {
    let client =
        reqwest::Client::builder().redirect(redirect_policy()).build().map_err(|e| Failure::other(e.to_string()))?;
    Ok(reqwest_middleware::ClientBuilder::new(client).with(SecureMediaMiddleware::new(access.media.strategy())).build())
}

pub(crate) async fn run(args: FetchArgs) -> Result<(), Failure> {
    if args.verbose {
        crate::verbose_logs();
    }
    let access = build(&args.access).await?;
    let client = client(&access)?;
    if args.verbose {
        eprintln!("-> {} mode, requesting {}", access.media.mode(), args.url);
    }
    let mut response =
        client.get(&args.url).send().await.map_err(|e| Failure::network(access.redact(&e.to_string())))?;
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
    while let Some(chunk) =
        response.chunk().await.map_err(|e| Failure::network(access.redact(&e.without_url().to_string())))?
    {
        if !checked {
            media_kind(&content_type, &chunk).map_err(Failure::not_media)?;
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
        media_kind(&content_type, &[]).map_err(Failure::not_media)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_is_told_from_login_pages() {
        assert!(media_kind("image/png", b"\x89PNG\r\n\x1a\nrest").is_ok());
        assert!(media_kind("image/webp", b"RIFF\0\0\0\0WEBPVP8L").is_ok());
        assert!(media_kind("video/mp4", b"\0\0\0\x18ftyp").is_ok());
        assert!(media_kind("text/html; charset=utf-8", b"<!doctype html>").is_err());
        assert!(media_kind("image/png", b"<html>login</html>").is_err());
        assert!(media_kind("image/jpeg", b"not a jpeg").is_err());
        assert!(media_kind("application/json", b"{}").is_err());
    }
}
