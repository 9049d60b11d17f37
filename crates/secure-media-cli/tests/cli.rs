//! The `secure-media` command, run as a user would.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use secure_media_server::{samples, ReferenceServer, RunningServer, ServerConfig, Tls};

const TOKEN: &str = "tok+en/with=chars";
const UNKNOWN_CA: &str = "the server's certificate is not signed by a trusted CA";
const CA_HINT: &str = "hint: pass --ca-cert FILE (or set SSL_CERT_FILE) if the server uses a private CA";

/// The command, with none of the caller's token or CA settings leaking in.
fn cli() -> Command {
    let mut command = Command::cargo_bin("secure-media").unwrap();
    command.env_remove("SECURE_MEDIA_TOKEN").env_remove("SSL_CERT_FILE");
    command
}

fn output_of(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (i32, String, String) {
    output_of(cli().args(args))
}

async fn run_async(args: Vec<String>) -> (i32, String, String) {
    run_with(args, &[], None).await
}

/// `args` with environment variables set and `stdin` fed to standard input.
async fn run_with(args: Vec<String>, env: &[(&str, &str)], stdin: Option<&str>) -> (i32, String, String) {
    let mut command = cli();
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    if let Some(stdin) = stdin {
        command.write_stdin(stdin.to_owned());
    }
    tokio::task::spawn_blocking(move || output_of(&mut command)).await.unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secure-media-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample(name: &str) -> &'static [u8] {
    &samples().iter().find(|s| s.name == name).unwrap().bytes
}

#[test]
fn resolve_embedded_fixes_every_vendor_bug_and_redacts_the_token() {
    let (code, out, err) = run(&[
        "resolve",
        "--mode",
        "embedded",
        "--secure-host",
        "files-us.cometchat.io",
        "--token",
        TOKEN,
        "https://files-us.cometchat.io/app/media/a.png?x=1",
        "https://files-us.cometchat.io/app/media/fatima.jpg",
        "https://evil.com/?next=files-us.cometchat.io",
        "not-a-valid-url",
        "https://files-us.cometchat.io/app/media/b.png?fat=old#frag",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "https://files-us.cometchat.io/app/media/a.png?x=1&fat=<redacted>",
            "https://files-us.cometchat.io/app/media/fatima.jpg?fat=<redacted>",
            "https://evil.com/?next=files-us.cometchat.io",
            "not-a-valid-url",
            "https://files-us.cometchat.io/app/media/b.png?fat=<redacted>#frag",
        ]
    );
    assert!(!out.contains("tok") && !err.contains("tok"));
    let (_, shown, _) = run(&[
        "resolve",
        "--secure-host",
        "files-us.cometchat.io",
        "--token",
        TOKEN,
        "--show-token",
        "https://files-us.cometchat.io/a.png",
    ]);
    assert_eq!(shown.trim(), "https://files-us.cometchat.io/a.png?fat=tok%2Ben%2Fwith%3Dchars");
}

#[test]
fn resolve_header_prints_the_clean_url_and_the_header() {
    let (code, out, _) = run(&[
        "resolve",
        "--mode",
        "header",
        "--secure-host",
        "files-us.cometchat.io",
        "--token",
        TOKEN,
        "https://files-us.cometchat.io/app/media/a.png?fat=stale",
        "https://example.com/public.png",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "https://files-us.cometchat.io/app/media/a.png",
            "Authorization: Bearer <redacted>",
            "https://example.com/public.png"
        ]
    );
}

#[test]
fn bad_flags_are_clear_errors() {
    let (code, _, err) = run(&["resolve", "--secure-host", "a/b", "--token", "t", "https://x.io/"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid secure host"), "{err}");
    let (code, _, err) =
        run(&["resolve", "--mode", "presigned", "--secure-host", "x.io", "--token", "t", "https://x.io/a"]);
    assert_eq!(code, 2);
    assert!(err.contains("--presign-endpoint is required"), "{err}");
    let (code, _, err) = run(&["resolve", "--secure-host", "x.io", "https://x.io/a"]);
    assert_eq!(code, 2, "a token or a login is required");
    assert!(err.contains("--token-file") && err.contains("SECURE_MEDIA_TOKEN") && err.contains("--login"), "{err}");
    let (code, _, err) =
        run(&["resolve", "--secure-host", "x.io", "--token", "t", "--token-file", "f", "https://x.io/a"]);
    assert_eq!(code, 2, "one token source on the command line: {err}");
    let (code, _, err) = run(&[
        "resolve",
        "--secure-host",
        "x.io",
        "--token",
        "t",
        "--login",
        "https://x.io/l",
        "--uid",
        "u",
        "https://x.io/a",
    ]);
    assert_eq!(code, 2, "{err}");
    for sub in ["serve", "resolve", "fetch", "doctor"] {
        let (code, out, _) = run(&[sub, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"));
    }
}

async fn server() -> RunningServer {
    ReferenceServer::start(ServerConfig::default()).await.unwrap()
}

fn access_flags(server: &RunningServer, mode: &str) -> Vec<String> {
    [
        "--mode",
        mode,
        "--secure-host",
        &server.host(),
        "--allow-http",
        "--login",
        &server.login_url(),
        "--uid",
        "cli-user",
        "--presign-endpoint",
        &server.presign_url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_login_and_presign_endpoints_are_refused_without_allow_http() {
    let server = server().await;
    let url = server.media_url("sample-64x64.gif");
    let without_allow_http = |flags: Vec<String>| -> Vec<String> {
        let mut args = vec!["resolve".to_string()];
        args.extend(flags.into_iter().filter(|f| f != "--allow-http"));
        args.push(url.clone());
        args
    };
    // The login endpoint: refused before anything is sent.
    let (code, _, err) = run_async(without_allow_http(access_flags(&server, "presigned"))).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--login") && err.contains("plain http") && err.contains("--allow-http"), "{err}");
    assert_eq!(server.stats().logins, 0, "no login request went out over http");
    // The presign endpoint, with a token given directly.
    let fat = server.login("cli-user").unwrap().fat;
    let args = vec![
        "resolve".to_string(),
        "--mode".into(),
        "presigned".into(),
        "--secure-host".into(),
        "files-us.cometchat.io".into(),
        "--token".into(),
        fat.clone(),
        "--presign-endpoint".into(),
        server.presign_url(),
        "https://files-us.cometchat.io/app/media/a.png".into(),
    ];
    let (code, _, err) = run_async(args).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--presign-endpoint") && err.contains("plain http") && !err.contains(&fat), "{err}");
    assert_eq!(server.stats().presign_calls + server.stats().requests_with_token, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_presigned_logs_in_and_presigns() {
    let server = server().await;
    let url = server.media_url("sample-64x64.gif");
    let mut args = vec!["resolve".to_string()];
    args.extend(access_flags(&server, "presigned"));
    args.push(url.clone());
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with(&format!("{url}?Expires=")) && out.contains("Signature="), "{out}");
    assert_eq!((server.stats().logins, server.stats().presign_calls), (1, 1));
}

/// Plain http, the opt-in for local servers (`--allow-http`); the https tests are below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_downloads_in_every_mode_and_refuses_clearly() {
    let server = server().await;
    let dir = std::env::temp_dir().join(format!("secure-media-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in ["embedded", "header", "presigned"] {
        let out = dir.join(format!("{mode}.png"));
        let mut args = vec!["fetch".to_string(), "-v".into(), "-o".into(), out.display().to_string()];
        args.extend(access_flags(&server, mode));
        args.push(server.media_url("sample-640x480.png"));
        let (code, _, err) = run_async(args).await;
        assert_eq!(code, 0, "{mode}: {err}");
        assert!(err.contains("<- 200"), "{err}");
        let expected = &samples().iter().find(|s| s.name == "sample-640x480.png").unwrap().bytes;
        assert_eq!(&std::fs::read(&out).unwrap()[..], &expected[..], "{mode}");
    }
    // A token the server does not accept: a one-line reason and exit code 3.
    let args = vec![
        "fetch".into(),
        "--secure-host".into(),
        server.host(),
        "--allow-http".into(),
        "--token".into(),
        "forged-token".into(),
        server.media_url("sample-64x64.gif"),
    ];
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 3, "{err}");
    assert!(out.is_empty() && err.contains("refused with 401") && !err.contains("forged-token"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_to_a_file_draws_no_progress_when_stderr_is_not_a_terminal() {
    let server = server().await;
    let dir = std::env::temp_dir().join(format!("secure-media-cli-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("a.png");
    let mut args = vec!["fetch".to_string(), "-o".into(), out.display().to_string()];
    args.extend(access_flags(&server, "presigned"));
    args.push(server.media_url("sample-640x480.png"));
    let (code, stdout, err) = run_async(args).await;
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty() && err.is_empty(), "stdout {stdout:?}, stderr {err:?}");
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_refuses_an_html_login_page_as_not_media() {
    let dir = std::env::temp_dir().join(format!("secure-media-cli-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("photo.html"), "<!doctype html><title>Sign in</title>").unwrap();
    let server =
        ReferenceServer::start(ServerConfig { media_dir: Some(dir.clone()), ..ServerConfig::default() }).await.unwrap();
    let mut args = vec!["fetch".to_string()];
    args.extend(access_flags(&server, "header"));
    args.push(server.media_url("photo.html"));
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("HTML page") && out.is_empty(), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_explains_expired_tokens_and_doubled_tokens() {
    let server = server().await;
    server.faults().set_fat_ttl(std::time::Duration::ZERO);
    let expired = server.login("old").unwrap().fat;
    let url = server.media_url("sample-64x64.gif");
    let args = vec![
        "doctor".into(),
        "--mode".into(),
        "header".into(),
        "--secure-host".into(),
        server.host(),
        "--allow-http".into(),
        "--token".into(),
        expired.clone(),
        format!("{url}?fat=whatever"),
    ];
    let (code, out, _) = run_async(args).await;
    assert_eq!(code, 3);
    assert!(out.contains("the FAT expired") && out.contains("log in again"), "{out}");
    assert!(out.contains("already carries ?fat= but the mode is header"), "{out}");
    assert!(!out.contains(&expired));

    server.faults().set_fat_ttl(std::time::Duration::from_secs(3600));
    let mut args = vec!["doctor".to_string()];
    args.extend(access_flags(&server, "header"));
    args.push(url.clone());
    let (code, out, _) = run_async(args).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("header mode loads this URL") && out.contains("no problems found"), "{out}");

    let args = vec![
        "doctor".into(),
        "--secure-host".into(),
        "files-us.cometchat.io".into(),
        "--token".into(),
        "t".into(),
        url,
    ];
    let (code, out, _) = run_async(args).await;
    assert_eq!(code, 3);
    assert!(out.contains("is not a configured secure host"), "{out}");
}

#[test]
fn serve_prints_where_it_listens_first() {
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("secure-media"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(first.starts_with("listening on http://127.0.0.1:"), "{first}");
}

/// The whole walkthrough as a user runs it: `secure-media serve --tls` in one process, then
/// `secure-media fetch --ca-cert` (the file serve wrote) in every mode, no `--allow-http`.
#[test]
fn serve_tls_then_fetch_with_its_ca_loads_an_image_in_every_mode() {
    let dir = temp_dir("serve-tls");
    let ca = dir.join("ca.pem").display().to_string();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("secure-media"))
        .args(["serve", "--tls", "--addr", "127.0.0.1:0", "--ca-out", &ca])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read everything serve prints (the reader stays open: serve must not meet a closed pipe).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let printed: Vec<String> = (&mut stdout).lines().map(|line| line.unwrap()).take(5).collect();
    let base = printed[0].strip_prefix("listening on ").unwrap().trim().to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{printed:?}");
    assert!(printed[1].trim_start().starts_with(&format!("CA certificate: {ca}")), "{printed:?}");
    let host = base.trim_start_matches("https://").to_owned();
    for mode in ["embedded", "header", "presigned"] {
        let out = dir.join(format!("{mode}.png")).display().to_string();
        let (code, _, err) = run(&[
            "fetch",
            "--ca-cert",
            &ca,
            "--mode",
            mode,
            "--secure-host",
            &host,
            "--login",
            &format!("{base}/v1/auth/login"),
            "--uid",
            "walkthrough",
            "--presign-endpoint",
            &format!("{base}/v1/media/presign"),
            "-o",
            &out,
            &format!("{base}/demo/media/sample-640x480.png"),
        ]);
        assert_eq!(code, 0, "{mode}: {err}");
        assert_eq!(std::fs::read(&out).unwrap(), sample("sample-640x480.png"), "{mode}");
    }
    child.kill().unwrap();
    let _ = child.wait();
    drop(stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The server's CA certificate in a file, as `serve --tls` writes it.
fn ca_file(server: &RunningServer, dir: &Path) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, server.ca_pem().expect("an https server")).unwrap();
    path.display().to_string()
}

/// Flags for an https server: no --allow-http.
fn https_flags(server: &RunningServer, mode: &str) -> Vec<String> {
    strings(&[
        "--mode",
        mode,
        "--secure-host",
        &server.host(),
        "--login",
        &server.login_url(),
        "--uid",
        "cli-user",
        "--presign-endpoint",
        &server.presign_url(),
    ])
}

/// No token, no signature and no query of a URL that could carry one.
fn assert_no_secret(text: &str, fat: &str) {
    assert!(!text.contains(fat), "the token leaked: {text}");
    assert!(!text.contains("fat=") && !text.contains("Signature="), "a credential query leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_over_https_trusts_the_ca_cert_in_every_mode() {
    let server = ReferenceServer::start(ServerConfig::https()).await.unwrap();
    assert!(server.base_url().starts_with("https://"));
    let dir = temp_dir("https");
    let ca = ca_file(&server, &dir);
    for mode in ["embedded", "header", "presigned"] {
        let out = dir.join(format!("{mode}.png"));
        let mut args = strings(&["fetch", "--ca-cert", &ca, "-o", &out.display().to_string()]);
        args.extend(https_flags(&server, mode));
        args.push(server.media_url("sample-640x480.png"));
        let (code, _, err) = run_async(args).await;
        assert_eq!(code, 0, "{mode}: {err}");
        assert_eq!(std::fs::read(&out).unwrap(), sample("sample-640x480.png"), "{mode}");
    }
    assert_eq!((server.stats().logins, server.stats().presign_calls), (3, 1));
    // resolve reaches the network too (login, presign) and trusts the same CA.
    let mut args = strings(&["resolve", "--ca-cert", &ca]);
    args.extend(https_flags(&server, "presigned"));
    args.push(server.media_url("sample-64x64.gif"));
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("{}?Expires=", server.media_url("sample-64x64.gif"))), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_is_trusted_like_ca_cert_and_a_missing_one_is_named() {
    let server = ReferenceServer::start(ServerConfig::https()).await.unwrap();
    let dir = temp_dir("ssl-cert-file");
    let ca = ca_file(&server, &dir);
    let out = dir.join("a.gif");
    let mut args = strings(&["fetch", "-o", &out.display().to_string()]);
    args.extend(https_flags(&server, "header"));
    args.push(server.media_url("sample-64x64.gif"));
    let (code, _, err) = run_with(args.clone(), &[("SSL_CERT_FILE", &ca)], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), sample("sample-64x64.gif"));

    let missing = dir.join("missing.pem").display().to_string();
    let (code, _, err) = run_with(args, &[("SSL_CERT_FILE", &missing)], None).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("SSL_CERT_FILE={missing}: cannot read it")), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_login_presign_fetch_and_doctor_name_the_unknown_ca_and_the_fix() {
    let server = ReferenceServer::start(ServerConfig::https()).await.unwrap();
    let fat = server.login("cli-user").unwrap().fat;
    server.reset_stats();
    let url = server.media_url("sample-64x64.gif");

    // The login: where, and why.
    let mut args = vec!["fetch".to_string()];
    args.extend(https_flags(&server, "header"));
    args.push(url.clone());
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("login at {} failed: TLS: {UNKNOWN_CA}", server.login_url())), "{err}");
    assert!(err.contains(CA_HINT) && out.is_empty(), "{err}");

    // The media request and the presign call, with the token from the environment.
    for mode in ["embedded", "header", "presigned"] {
        let mut args = strings(&["fetch", "--mode", mode, "--secure-host", &server.host()]);
        args.extend(strings(&["--presign-endpoint", &server.presign_url(), &url]));
        let (code, out, err) = run_with(args, &[("SECURE_MEDIA_TOKEN", &fat)], None).await;
        assert_eq!(code, 4, "{mode}: {err}");
        assert!(err.contains(&format!("TLS: {UNKNOWN_CA}")) && err.contains(CA_HINT), "{mode}: {err}");
        assert_no_secret(&out, &fat);
        assert_no_secret(&err, &fat);
    }

    // The doctor reports it as a problem with the same fix.
    let args = strings(&["doctor", "--mode", "header", "--secure-host", &server.host(), "--token", &fat, &url]);
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 3, "{err}");
    assert!(out.contains(UNKNOWN_CA) && out.contains("fix: pass --ca-cert FILE"), "{out}");
    assert_no_secret(&out, &fat);
    assert_no_secret(&err, &fat);

    let stats = server.stats();
    assert_eq!((stats.logins, stats.presign_calls, stats.requests), (0, 0, 0), "nothing got past the handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_named() {
    let server =
        ReferenceServer::start(ServerConfig { tls: Tls::ExpiredCertificate, ..ServerConfig::default() }).await.unwrap();
    let dir = temp_dir("expired");
    let ca = ca_file(&server, &dir);
    let args = strings(&[
        "fetch",
        "--ca-cert",
        &ca,
        "--secure-host",
        &server.host(),
        "--token",
        TOKEN,
        &server.media_url("sample-64x64.gif"),
    ]);
    let (code, _, err) = run_async(args).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("TLS: the server's certificate has expired"), "{err}");
    assert!(!err.contains("hint:"), "no CA hint for an expired certificate: {err}");
    assert_no_secret(&err, TOKEN);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_a_file_standard_input_or_the_environment_and_is_never_shown() {
    let server = ReferenceServer::start(ServerConfig::https()).await.unwrap();
    let fat = server.login("cli-user").unwrap().fat;
    let dir = temp_dir("token-input");
    let ca = ca_file(&server, &dir);
    let token_file = dir.join("fat.txt");
    std::fs::write(&token_file, format!("{fat}\n")).unwrap();
    let fetch = |token_flags: &[&str]| {
        let mut args =
            strings(&["fetch", "-v", "--mode", "embedded", "--ca-cert", &ca, "--secure-host", &server.host()]);
        args.extend(strings(token_flags));
        args.extend(strings(&["-o", &dir.join("a.gif").display().to_string(), &server.media_url("sample-64x64.gif")]));
        args
    };
    let file = token_file.display().to_string();
    let stdin = format!("{fat}\n");
    let cases = [
        ("--token-file FILE", fetch(&["--token-file", &file]), None, None),
        ("--token-file -", fetch(&["--token-file", "-"]), None, Some(stdin.as_str())),
        ("SECURE_MEDIA_TOKEN", fetch(&[]), Some(fat.as_str()), None),
        // A flag wins over the environment.
        ("--token-file over the variable", fetch(&["--token-file", &file]), Some("stale"), None),
    ];
    for (case, args, env_token, stdin) in cases {
        let env: Vec<(&str, &str)> = env_token.map(|token| ("SECURE_MEDIA_TOKEN", token)).into_iter().collect();
        let (code, out, err) = run_with(args, &env, stdin).await;
        assert_eq!(code, 0, "{case}: {err}");
        assert!(err.contains("<- 200"), "{case}: {err}");
        assert_no_secret(&out, &fat);
        assert_no_secret(&err, &fat);
    }
    assert_eq!(server.stats().served.fat_query, 4);

    // An empty file is a usage error naming it.
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let (code, _, err) = run_async(fetch(&["--token-file", &empty.display().to_string()])).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("--token-file {}", empty.display())) && err.contains("empty"), "{err}");

    // --help names the variable but never prints its value.
    for sub in ["resolve", "fetch", "doctor"] {
        let (code, out, _) = run_with(strings(&[sub, "--help"]), &[("SECURE_MEDIA_TOKEN", &fat)], None).await;
        assert_eq!(code, 0);
        assert!(out.contains("SECURE_MEDIA_TOKEN") && out.contains("process list"), "{out}");
        assert!(!out.contains(&fat), "{out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_a_network_error_that_says_could_not_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let args = strings(&[
        "fetch",
        "--secure-host",
        &closed.to_string(),
        "--allow-http",
        "--token",
        TOKEN,
        &format!("http://{closed}/app/media/a.png?fat={TOKEN}&x=1"),
    ]);
    let (code, out, err) = run_async(args).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("http://{closed}/app/media/a.png: could not connect")), "{err}");
    assert!(err.contains("onnection refused") && !err.contains("hint:"), "{err}");
    assert!(out.is_empty());
    assert_no_secret(&err, TOKEN);
    assert!(!err.contains("x=1"), "no query at all: {err}");
}
