//! Turning the shared flags into a [`SecureMedia`] handle, and keeping the token off the screen.

use std::sync::Arc;

use secure_media_core::presigned::endpoint::check_endpoint;
use secure_media_core::{AccessError, FileAccessToken, LoginCell, SecureHosts, SecureMedia, StaticToken, TokenSource};
use secure_media_reqwest::ReqwestPresigner;

use crate::args::{AccessArgs, Mode};
use crate::Failure;

pub(crate) struct Access {
    pub(crate) media: SecureMedia,
    pub(crate) tokens: Arc<dyn TokenSource>,
    show_token: bool,
}

/// Logs in at `endpoint`: only over https, or plain http with `allow_http` (`--allow-http`), since
/// the answer carries the token.
pub(crate) async fn login(endpoint: &str, uid: &str, allow_http: bool) -> Result<FileAccessToken, AccessError> {
    check_endpoint(endpoint, allow_http)?;
    // The endpoint as printed: scheme, host, port and path (no userinfo, no query).
    let shown = url::Url::parse(endpoint)
        .map_or_else(|_| "the login endpoint".to_owned(), |url| secure_media_core::redacted_url(&url));
    let failed = |why: &str| AccessError::RefreshFailed(format!("login at {shown} failed: {why}"));
    // No redirects: a login endpoint that redirects elsewhere does not get to choose where the token comes from.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|_| failed("no HTTP client"))?;
    let response = client
        .post(endpoint)
        .json(&serde_json::json!({ "uid": uid }))
        .send()
        .await
        .map_err(|_| failed("unreachable"))?;
    if !response.status().is_success() {
        return Err(failed(&format!("answered {}", response.status())));
    }
    let answer: serde_json::Value = response.json().await.map_err(|_| failed("not a JSON login answer"))?;
    let fat = answer.get("fat").and_then(|f| f.as_str()).ok_or_else(|| failed("no \"fat\" in the answer"))?;
    FileAccessToken::new(fat)
}

pub(crate) fn hosts(args: &AccessArgs) -> Result<SecureHosts, Failure> {
    let mut hosts = SecureHosts::new();
    for host in &args.secure_hosts {
        hosts.add(host).map_err(|e| Failure::usage(e.to_string()))?;
    }
    Ok(if args.allow_http { hosts.allowing_http() } else { hosts })
}

pub(crate) async fn build(args: &AccessArgs) -> Result<Access, Failure> {
    let hosts = hosts(args)?;
    let tokens: Arc<dyn TokenSource> = match (&args.token, &args.login, &args.uid) {
        (Some(token), _, _) => Arc::new(StaticToken::parse(token.clone()).map_err(|e| Failure::usage(e.to_string()))?),
        (None, Some(endpoint), Some(uid)) => {
            let (endpoint, uid, allow_http) = (endpoint.clone(), uid.clone(), args.allow_http);
            check_endpoint(&endpoint, allow_http).map_err(|e| Failure::usage(format!("--login: {e}")))?;
            let first = login(&endpoint, &uid, allow_http).await.map_err(|e| Failure::network(e.to_string()))?;
            let cell = LoginCell::with_relogin(move || {
                let (endpoint, uid) = (endpoint.clone(), uid.clone());
                async move { login(&endpoint, &uid, allow_http).await }
            });
            cell.set(first);
            Arc::new(cell)
        }
        _ => return Err(Failure::usage("give --token, or --login with --uid")),
    };
    let mut builder =
        SecureMedia::builder("cli").secure_hosts(hosts).mode(args.mode.into()).token_source(tokens.clone());
    match (&args.presign_endpoint, args.mode) {
        (Some(endpoint), _) => {
            let endpoint = endpoint.parse().map_err(|_| Failure::usage("--presign-endpoint is not a URL"))?;
            let client = reqwest::Client::new();
            let presigner = if args.allow_http {
                ReqwestPresigner::new_allowing_http(client, endpoint)
            } else {
                ReqwestPresigner::new(client, endpoint)
            };
            let presigner = presigner.map_err(|e| Failure::usage(format!("--presign-endpoint: {e}")))?;
            builder = builder.presigner(Arc::new(presigner));
        }
        (None, Mode::Presigned) => return Err(Failure::usage("--presign-endpoint is required in presigned mode")),
        (None, _) => {}
    }
    let media = builder.build().map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Access { media, tokens, show_token: args.show_token })
}

impl Access {
    /// The text with the current token (raw or query-encoded) shown as `<redacted>`.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.show_token {
            return text.to_owned();
        }
        match self.tokens.current() {
            Some(token) => {
                text.replace(token.expose_secret(), "<redacted>").replace(token.query_param().encoded(), "<redacted>")
            }
            None => text.to_owned(),
        }
    }
}

/// `authorization` -> `Authorization`, `x-api-key` -> `X-Api-Key`.
pub(crate) fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}
