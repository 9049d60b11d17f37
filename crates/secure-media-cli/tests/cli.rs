//! The `secure-media` command, run as a user would.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use secure_media_server::{samples, ReferenceServer, RunningServer, ServerConfig};

const TOKEN: &str = "tok+en/with=chars";

fn cli() -> Command {
    Command::cargo_bin("secure-media").unwrap()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let output = cli().args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn run_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || run(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
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
    let (code, _, _) = run(&["resolve", "--secure-host", "x.io", "https://x.io/a"]);
    assert_eq!(code, 2, "a token or a login is required");
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
