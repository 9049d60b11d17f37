//! Turning the shared flags into a [`SecureMedia`] handle, and keeping the token off the screen.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secure_media_core::presigned::endpoint::check_endpoint;
use secure_media_core::{AccessError, FileAccessToken, LoginCell, SecureHosts, SecureMedia, StaticToken, TokenSource};
use secure_media_reqwest::{network_error, ReqwestPresigner};

use crate::args::{AccessArgs, Mode};
use crate::client::http_client;
use crate::Failure;

/// The environment variable that holds the token when no flag gives one.
pub(crate) const TOKEN_ENV: &str = "SECURE_MEDIA_TOKEN";

/// The whole login exchange, connection to last byte.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Access {
    pub(crate) media: SecureMedia,
    pub(crate) tokens: Arc<dyn TokenSource>,
    /// The client the presigner and the login use; wrap it with the middleware to fetch.
    pub(crate) client: reqwest::Client,
    show_token: bool,
}

/// Where the token comes from, read once (standard input cannot be read twice). No `Debug`: it
/// holds the token.
pub(crate) enum TokenInput {
    /// From `--token-file`, `--token` or `SECURE_MEDIA_TOKEN`.
    Given(String),
    /// From a login at `endpoint` as `uid`.
    Login { endpoint: String, uid: String },
}

impl TokenInput {
    /// `--token-file`, `--token` or `--login`/`--uid` (clap lets through at most one), else
    /// `SECURE_MEDIA_TOKEN`.
    fn read(args: &AccessArgs) -> Result<Self, Failure> {
        if let Some(path) = &args.token_file {
            return read_token_file(path).map(Self::Given);
        }
        if let Some(token) = &args.token {
            return Ok(Self::Given(token.clone()));
        }
        if let (Some(endpoint), Some(uid)) = (&args.login, &args.uid) {
            return Ok(Self::Login { endpoint: endpoint.clone(), uid: uid.clone() });
        }
        match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.is_empty() => Ok(Self::Given(token)),
            Ok(_) => Err(Failure::usage(format!("{TOKEN_ENV} is set but empty"))),
            Err(std::env::VarError::NotUnicode(_)) => Err(Failure::usage(format!("{TOKEN_ENV} is not valid text"))),
            Err(std::env::VarError::NotPresent) => Err(Failure::usage(format!(
                "no token: give --token-file FILE (- for standard input), set {TOKEN_ENV}, or give --login URL --uid USER"
            ))),
        }
    }
}

/// The token in `path` (`-`: standard input), without its trailing newline; never in a message.
fn read_token_file(path: &Path) -> Result<String, Failure> {
    let stdin = path == Path::new("-");
    let named =
        if stdin { "--token-file - (standard input)".to_owned() } else { format!("--token-file {}", path.display()) };
    // A token is a few KiB at most: never read more than this (`/dev/zero`, a file named by mistake).
    const MAX_TOKEN_FILE: u64 = 64 * 1024;
    let unreadable = |error: std::io::Error| Failure::usage(format!("{named}: cannot read it: {error}"));
    let reader: Box<dyn Read> =
        if stdin { Box::new(std::io::stdin()) } else { Box::new(std::fs::File::open(path).map_err(unreadable)?) };
    let mut text = String::new();
    reader.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text).map_err(unreadable)?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(Failure::usage(format!("{named}: larger than {MAX_TOKEN_FILE} bytes, not a token")));
    }
    let token = text.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(Failure::usage(format!("{named}: no token in it (it is empty)")));
    }
    Ok(token.to_owned())
}

/// Logs in at `endpoint` with `client`: only over https, or plain http with `allow_http`
/// (`--allow-http`), since the answer carries the token. A request that does not complete is
/// [`AccessError::Network`] (the endpoint without its query, and the cause chain), an answer that
/// is not a success [`AccessError::Status`], one without a usable token
/// [`AccessError::MalformedToken`]: what a relogin hook answers, so that a failed relogin says why.
pub(crate) async fn login(
    client: &reqwest::Client,
    endpoint: &str,
    uid: &str,
    allow_http: bool,
) -> Result<FileAccessToken, AccessError> {
    check_endpoint(endpoint, allow_http)?;
    let shown = shown_url(endpoint);
    let unreachable = |error| AccessError::Network { url: shown.clone(), error: network_error(error) };
    // The client follows no redirects: a login endpoint that redirects elsewhere does not get to
    // choose where the token comes from.
    let response = client
        .post(endpoint)
        .timeout(LOGIN_TIMEOUT)
        .json(&serde_json::json!({ "uid": uid }))
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(AccessError::Status { url: shown.clone(), status: response.status() });
    }
    let body = response.bytes().await.map_err(unreachable)?;
    let answer: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| AccessError::MalformedToken("the login answer is not JSON"))?;
    let fat = answer
        .get("fat")
        .and_then(|f| f.as_str())
        .ok_or(AccessError::MalformedToken("the login answer holds no \"fat\""))?;
    FileAccessToken::new(fat)
}

/// A network failure of a request to `url`: the URL without its query, and the redacted cause.
pub(crate) fn network_failure(url: &str, error: reqwest::Error) -> Failure {
    Failure::network(format!("{}: {}", shown_url(url), network_error(error)))
}

/// `url` as printed: scheme, host, port and path (no userinfo, no query: either may hold a secret).
pub(crate) fn shown_url(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| "(not a URL)".to_owned(), |url| secure_media_core::redacted_url(&url))
}

/// A failed [`login`] at `endpoint` as the user reads it: where, and why (with the cause chain).
pub(crate) fn login_failure(endpoint: &str, error: &AccessError) -> Failure {
    match error {
        AccessError::Network { url, error } => Failure::network(format!("login at {url} failed: {error}")),
        AccessError::Status { url, status } => Failure::network(format!("login at {url} failed: answered {status}")),
        AccessError::MalformedToken(_) => Failure::network(format!("login at {} failed: {error}", shown_url(endpoint))),
        _ => Failure::access(error),
    }
}

pub(crate) fn hosts(args: &AccessArgs) -> Result<SecureHosts, Failure> {
    let mut hosts = SecureHosts::new();
    for host in &args.secure_hosts {
        hosts.add(host).map_err(|e| Failure::usage(e.to_string()))?;
    }
    Ok(if args.allow_http { hosts.allowing_http() } else { hosts })
}

/// The shared flags, read once: where the token comes from, and the one HTTP client.
pub(crate) struct Setup<'a> {
    args: &'a AccessArgs,
    pub(crate) token: TokenInput,
    pub(crate) client: reqwest::Client,
}

impl<'a> Setup<'a> {
    pub(crate) fn read(args: &'a AccessArgs) -> Result<Self, Failure> {
        let client = http_client(&args.ca_certs)?;
        let token = TokenInput::read(args)?;
        Ok(Self { args, token, client })
    }

    /// The handle for `mode` (the doctor tries each).
    pub(crate) async fn access(&self, mode: Mode) -> Result<Access, Failure> {
        let args = self.args;
        let hosts = hosts(args)?;
        let tokens: Arc<dyn TokenSource> = match &self.token {
            TokenInput::Given(token) => {
                Arc::new(StaticToken::parse(token.clone()).map_err(|e| Failure::usage(e.to_string()))?)
            }
            TokenInput::Login { endpoint, uid } => {
                let allow_http = args.allow_http;
                check_endpoint(endpoint, allow_http).map_err(|e| Failure::usage(format!("--login: {e}")))?;
                let first =
                    login(&self.client, endpoint, uid, allow_http).await.map_err(|e| login_failure(endpoint, &e))?;
                let (client, endpoint, uid) = (self.client.clone(), endpoint.clone(), uid.clone());
                let cell = LoginCell::new().with_relogin(move || {
                    let (client, endpoint, uid) = (client.clone(), endpoint.clone(), uid.clone());
                    async move { login(&client, &endpoint, &uid, allow_http).await }
                });
                cell.set(first);
                Arc::new(cell)
            }
        };
        let mut builder =
            SecureMedia::builder("cli").secure_hosts(hosts).mode(mode.into()).token_source(tokens.clone());
        match (&args.presign_endpoint, mode) {
            (Some(endpoint), _) => {
                let endpoint = endpoint.parse().map_err(|_| Failure::usage("--presign-endpoint is not a URL"))?;
                let client = self.client.clone();
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
        Ok(Access { media, tokens, client: self.client.clone(), show_token: args.show_token })
    }
}

/// The handle the flags describe.
pub(crate) async fn build(args: &AccessArgs) -> Result<Access, Failure> {
    Setup::read(args)?.access(args.mode).await
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

    /// The failure with its message through [`redact`](Self::redact): a second guard, as no
    /// message is built with the token in it.
    pub(crate) fn redact_failure(&self, mut failure: Failure) -> Failure {
        failure.message = self.redact(&failure.message);
        failure
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
