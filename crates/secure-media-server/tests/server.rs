//! The reference server's rules, proven with a plain HTTP client on 127.0.0.1.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{header, StatusCode};
use secure_media_server::{
    gallery_image, Control, ReferenceServer, Route, RunningServer, ServerConfig, GALLERY_LEN, GALLERY_SIDE, MAX_TTL,
};
use serde_json::Value;

async fn server() -> RunningServer {
    ReferenceServer::start(ServerConfig::default()).await.unwrap()
}

#[tokio::test]
async fn login_issues_an_hs256_fat_with_the_claims() {
    let server = server().await;
    let answer: Value = login(&client(), &server, "alice").await;
    assert_eq!(answer["uid"], "alice");
    let fat = answer["fat"].as_str().unwrap();
    let payload = fat.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["app_id"], "demo");
    assert_eq!(claims["exp"], answer["expires_at"]);
    assert!(claims["iat"].as_u64().unwrap() < claims["exp"].as_u64().unwrap());
    let bad = client().post(server.login_url()).json(&serde_json::json!({"uid": ""})).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.stats().logins, 1);
    let direct = server.login("alice").unwrap();
    assert!(!format!("{direct:?}").contains(&direct.fat), "Debug hides the FAT");
}

#[tokio::test]
async fn media_without_proof_is_401_and_never_the_file() {
    let server = server().await;
    let url = server.media_url("sample-640x480.png");
    for request in [
        client().get(&url),
        client().get(format!("{url}?fat=not-a-jwt")),
        client().get(&url).bearer_auth("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = response.bytes().await.unwrap();
        assert!(!body.starts_with(b"\x89PNG"), "a refusal carries file bytes");
    }
    let stats = server.stats();
    assert_eq!((stats.refusals.missing, stats.refusals.invalid_fat), (1, 2));
}

#[tokio::test]
async fn each_proof_serves_the_file_with_its_headers() {
    let server = server().await;
    let fat = server.login("bob").unwrap().fat;
    let url = server.media_url("sample-640x480.png");
    let signed = presign(&client(), &server, &fat, std::slice::from_ref(&url)).await;
    let presigned = signed["urls"][0]["presigned_url"].as_str().unwrap().to_owned();
    assert!(presigned.contains("Expires=") && presigned.contains("Signature=") && presigned.contains("Key-Pair-Id="));
    for request in
        [client().get(format!("{url}?fat={fat}")), client().get(&url).bearer_auth(&fat), client().get(&presigned)]
    {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
        assert!(response.headers().contains_key(header::ETAG));
        let expected = sample("sample-640x480.png");
        assert_eq!(response.headers()[header::CONTENT_LENGTH], expected.len().to_string().as_str());
        assert_eq!(&response.bytes().await.unwrap()[..], expected);
    }
    let served = server.stats().served;
    assert_eq!((served.fat_query, served.bearer, served.presigned), (1, 1, 1));
}

#[tokio::test]
async fn expired_and_tampered_presigned_urls_are_403() {
    let server = server().await;
    let fat = server.login("carol").unwrap().fat;
    let url = server.media_url("sample-64x64.gif");
    let good = presign(&client(), &server, &fat, std::slice::from_ref(&url)).await["urls"][0]["presigned_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let tampered = [
        good.replace("sample-64x64.gif", "sample-640x480.png"),
        good.replace("Key-Pair-Id=K2REFERENCE", "Key-Pair-Id=OTHER"),
        good.replace("Expires=", "Expires=9"),
        format!("{}A", good),
    ];
    for bad in &tampered {
        let response = client().get(bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{bad}");
        assert!(!response.bytes().await.unwrap().starts_with(b"GIF"));
    }
    server.faults().set_url_ttl(Duration::ZERO);
    let expired =
        presign(&client(), &server, &fat, &[url]).await["urls"][0]["presigned_url"].as_str().unwrap().to_owned();
    let response = client().get(&expired).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let refusals = server.stats().refusals;
    assert_eq!((refusals.bad_signature, refusals.expired_url), (4, 1));
}

#[tokio::test]
async fn an_expired_fat_is_401() {
    let server = server().await;
    server.faults().set_fat_ttl(Duration::ZERO);
    let fat = server.login("dave").unwrap().fat;
    let response = client().get(server.media_url("sample-64x64.gif")).bearer_auth(&fat).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let presign = client()
        .post(server.presign_url())
        .bearer_auth(&fat)
        .json(&serde_json::json!({"urls": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(presign.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.stats().refusals.expired_fat, 2);
}

#[tokio::test]
async fn range_requests_get_206_and_416() {
    let server = server().await;
    let fat = server.login("erin").unwrap().fat;
    let url = format!("{}?fat={fat}", server.media_url("sample-clip.mp4"));
    let clip = sample("sample-clip.mp4");
    let response = client().get(&url).header(header::RANGE, "bytes=4-11").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()[header::CONTENT_RANGE], format!("bytes 4-11/{}", clip.len()).as_str());
    assert_eq!(&response.bytes().await.unwrap()[..], &clip[4..12]);
    let tail = client().get(&url).header(header::RANGE, "bytes=-16").send().await.unwrap();
    assert_eq!(&tail.bytes().await.unwrap()[..], &clip[clip.len() - 16..]);
    let beyond = client().get(&url).header(header::RANGE, format!("bytes={}-", clip.len())).send().await.unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.headers()[header::CONTENT_LENGTH], clip.len().to_string().as_str());
    let etag = head.headers()[header::ETAG].to_str().unwrap().to_owned();
    let cached = client().get(&url).header(header::IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_leave_the_media_directory_are_refused() {
    let server = server().await;
    let fat = server.login("frank").unwrap().fat;
    for path in
        ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a/./b.png"]
    {
        let target = format!("/demo/media/{path}?fat={fat}");
        // A raw request, so neither the client nor a URL parser normalises `..` away.
        let answer = tokio::task::spawn_blocking({
            let addr = server.addr();
            move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                write!(stream, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer
            }
        })
        .await
        .unwrap();
        let status_line = answer.lines().next().unwrap_or_default().to_owned();
        assert!(status_line.contains("400") || status_line.contains("404"), "{path}: {status_line}");
        assert!(!answer.contains("root:"), "{path}");
    }
    assert!(server.stats().refusals.traversal >= 4);
}

#[tokio::test]
async fn one_presign_call_signs_many_urls_and_refuses_foreign_ones() {
    let server = server().await;
    let fat = server.login("gina").unwrap().fat;
    let urls = vec![
        server.media_url("sample-640x480.png"),
        server.media_url("sample-64x64.gif"),
        "https://elsewhere.example/demo/media/x.png".to_owned(),
        "not a url".to_owned(),
    ];
    let answer = presign(&client(), &server, &fat, &urls).await;
    let items = answer["urls"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["url"], urls[i].as_str());
        if i < 2 {
            assert!(item["presigned_url"].as_str().unwrap().starts_with(&urls[i]));
            assert!(item["expires_at"].as_u64().unwrap() > 0);
        } else {
            assert!(item["error"].is_string() && item["presigned_url"].is_null());
        }
    }
    let stats = server.stats();
    assert_eq!((stats.presign_calls, stats.urls_presigned), (1, 2));
    let no_fat = client().post(server.presign_url()).json(&serde_json::json!({"urls": urls})).send().await.unwrap();
    assert_eq!(no_fat.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn fault_knobs_delay_fail_drop_and_garble() {
    let server = server().await;
    let fat = server.login("hank").unwrap().fat;
    let url = format!("{}?fat={fat}", server.media_url("sample-64x64.gif"));

    server.faults().delay(Route::Media, Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    // A delay past the end of time never ends, and breaks nothing (no overflow, no panic).
    server.faults().delay(Route::Media, Duration::from_millis(u64::MAX));
    let waited = client().get(&url).timeout(Duration::from_millis(200)).send().await;
    assert!(waited.is_err_and(|e| e.is_timeout()));
    server.faults().delay(Route::Media, Duration::ZERO);
    assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::OK);

    server.faults().fail_next(Route::Media, 2, StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..2 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::OK);

    server.faults().drop_next(Route::Media, 1);
    let dropped = match client().get(&url).send().await {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(dropped, "the connection was not dropped");

    server.faults().malformed_presign_next(1);
    let garbled = client()
        .post(server.presign_url())
        .bearer_auth(&fat)
        .json(&serde_json::json!({"urls": [server.media_url("sample-64x64.gif")]}))
        .send()
        .await
        .unwrap();
    assert!(garbled.json::<Value>().await.is_err());
    assert_eq!(server.stats().faults_injected, 3);
}

#[tokio::test]
async fn the_redirect_fault_sends_clients_to_another_origin() {
    let server = server().await;
    let other = ReferenceServer::start(ServerConfig::default()).await.unwrap();
    let fat = server.login("ivy").unwrap().fat;
    server.faults().redirect_media_to(Some(other.base_url()), true);
    let response = client().get(server.media_url("sample-64x64.gif")).bearer_auth(&fat).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[header::LOCATION], other.media_url("sample-64x64.gif").as_str());
    server.faults().redirect_media_to(Some(other.base_url()), false);
    let with_query = client().get(format!("{}?w=1", server.media_url("a.png"))).send().await.unwrap();
    assert_eq!(with_query.headers()[header::LOCATION], other.media_url("a.png").as_str());
    assert_eq!(server.stats().redirects, 2);
    assert_eq!(other.stats().requests, 0);
}

#[tokio::test]
async fn control_endpoint_and_stats_endpoint_speak_json() {
    let server = ReferenceServer::start(ServerConfig { control: true, ..ServerConfig::default() }).await.unwrap();
    let control = |body: Value| client().post(format!("{}/_control", server.base_url())).json(&body).send();
    assert_eq!(
        control(serde_json::json!({"route": "login", "fail_next": 1, "status": 502})).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let login = client().post(server.login_url()).json(&serde_json::json!({"uid": "j"})).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(control(serde_json::json!({"fail_next": 1})).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let typed = Control { fat_ttl_secs: Some(0), ..Control::default() };
    assert_eq!(control(serde_json::to_value(typed).unwrap()).await.unwrap().status(), StatusCode::NO_CONTENT);
    let stats: Value =
        client().get(format!("{}/_stats", server.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["faults_injected"], 1);
    assert!(stats["served"].is_object() && stats["refusals"].is_object());
}

#[tokio::test]
async fn a_media_directory_is_served_and_cannot_be_escaped_by_symlink() {
    let root = std::env::temp_dir().join(format!("secure-media-dir-{}", std::process::id()));
    let media = root.join("media");
    std::fs::create_dir_all(media.join("nested")).unwrap();
    std::fs::write(media.join("nested/hello.txt"), b"hello").unwrap();
    std::fs::write(root.join("secret.txt"), b"top secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("secret.txt"), media.join("link.txt")).unwrap();
    let server = ReferenceServer::start(ServerConfig { media_dir: Some(media.clone()), ..ServerConfig::default() })
        .await
        .unwrap();
    let fat = server.login("kim").unwrap().fat;
    let ok = client().get(server.media_url("nested/hello.txt")).bearer_auth(&fat).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(&ok.bytes().await.unwrap()[..], b"hello");
    let escaped = client().get(server.media_url("link.txt")).bearer_auth(&fat).send().await.unwrap();
    assert_eq!(escaped.status(), StatusCode::NOT_FOUND);
    assert!(ReferenceServer::start(ServerConfig { media_dir: Some(root.join("missing")), ..ServerConfig::default() })
        .await
        .is_err());
    std::fs::remove_dir_all(&root).unwrap();
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn presigned_url_of(answer: &Value) -> String {
    answer["urls"][0]["presigned_url"].as_str().unwrap_or_else(|| panic!("not presigned: {answer}")).to_owned()
}

#[tokio::test]
async fn presigned_urls_verify_for_file_names_that_need_percent_encoding() {
    let dir = TempDir::new("encoded-names");
    std::fs::create_dir_all(dir.0.join("sub")).unwrap();
    std::fs::write(dir.0.join("a b.png"), b"space").unwrap();
    std::fs::write(dir.0.join("ü.png"), b"umlaut").unwrap();
    std::fs::write(dir.0.join("sub/c.png"), b"nested").unwrap();
    let server = ReferenceServer::start(ServerConfig { media_dir: Some(dir.0.clone()), ..ServerConfig::default() })
        .await
        .unwrap();
    let fat = server.login("lena").unwrap().fat;
    for (name, bytes) in
        [("a%20b.png", &b"space"[..]), ("ü.png", b"umlaut"), ("%C3%BC.png", b"umlaut"), ("sub%2Fc.png", b"nested")]
    {
        let presigned = presigned_url_of(&presign(&client(), &server, &fat, &[server.media_url(name)]).await);
        let response = client().get(&presigned).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(&response.bytes().await.unwrap()[..], bytes, "{name}");
    }
    assert_eq!(server.stats().served.presigned, 4);
    // The signature covers the path as sent: another spelling of the same file is another path.
    let presigned = presigned_url_of(&presign(&client(), &server, &fat, &[server.media_url("ü.png")]).await);
    assert!(presigned.contains("/%C3%BC.png?"), "{presigned}");
    let respelled = client().get(presigned.replace("%C3%BC", "%c3%bc")).send().await.unwrap();
    assert_eq!(respelled.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn control_is_404_unless_enabled_and_the_faults_api_works_regardless() {
    let server = server().await;
    let knob = serde_json::json!({"route": "login", "fail_next": 1, "status": 502});
    let control = client().post(format!("{}/_control", server.base_url())).json(&knob).send().await.unwrap();
    assert_eq!(control.status(), StatusCode::NOT_FOUND);
    let login = || client().post(server.login_url()).json(&serde_json::json!({"uid": "max"})).send();
    assert_eq!(login().await.unwrap().status(), StatusCode::OK, "the refused knob was applied");
    server.faults().fail_next(Route::Login, 1, StatusCode::BAD_GATEWAY);
    assert_eq!(login().await.unwrap().status(), StatusCode::BAD_GATEWAY);
    assert_eq!(login().await.unwrap().status(), StatusCode::OK);
}

/// Presigns one sample, checks the URL lives at most `MAX_TTL`, and that it is served.
async fn assert_presigned_lifetime_is_clamped(server: &RunningServer, fat: &str, body_extra: Value) {
    let url = server.media_url("sample-64x64.gif");
    let mut body = serde_json::json!({ "urls": [url] });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), body_extra.as_object()) {
        body.extend(extra.clone());
    }
    let before = unix_now();
    let response = client().post(server.presign_url()).bearer_auth(fat).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let expires_at = answer["urls"][0]["expires_at"].as_u64().unwrap();
    assert!(expires_at > before && expires_at <= unix_now() + MAX_TTL.as_secs(), "{expires_at}");
    let served = client().get(presigned_url_of(&answer)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(&served.bytes().await.unwrap()[..], sample("sample-64x64.gif"));
}

fn assert_fat_lifetime_is_clamped(expires_at: u64) {
    let now = unix_now();
    assert!(expires_at > now && expires_at <= now + MAX_TTL.as_secs(), "{expires_at}");
}

#[tokio::test]
async fn huge_url_ttl_knob_is_clamped_to_max_ttl_not_a_panic() {
    let server = server().await;
    let fat = server.login("nora").unwrap().fat;
    server.faults().set_url_ttl(Duration::MAX);
    // The presign API takes no lifetime: one asked for is ignored, not trusted.
    let asked = serde_json::json!({"ttl": u64::MAX, "expires_in": 1e300, "expires_at": -1});
    assert_presigned_lifetime_is_clamped(&server, &fat, asked).await;
}

#[tokio::test]
async fn huge_fat_ttl_knob_is_clamped_to_max_ttl_not_a_panic() {
    let server = server().await;
    server.faults().set_fat_ttl(Duration::MAX);
    let direct = server.login("olga").unwrap();
    assert_fat_lifetime_is_clamped(direct.expires_at);
    let answer: Value = login(&client(), &server, "olga").await;
    assert_fat_lifetime_is_clamped(answer["expires_at"].as_u64().unwrap());
    let fat = answer["fat"].as_str().unwrap();
    let media = client().get(server.media_url("sample-64x64.gif")).bearer_auth(fat).send().await.unwrap();
    assert_eq!(media.status(), StatusCode::OK);
}

#[tokio::test]
async fn huge_configured_ttls_are_clamped_to_max_ttl_not_a_panic() {
    let config = ServerConfig { fat_ttl: Duration::MAX, url_ttl: Duration::MAX, ..ServerConfig::default() };
    let server = ReferenceServer::start(config).await.unwrap();
    let login = server.login("pia").unwrap();
    assert_fat_lifetime_is_clamped(login.expires_at);
    assert_presigned_lifetime_is_clamped(&server, &login.fat, Value::Null).await;
}

#[tokio::test]
async fn huge_ttls_set_through_control_are_clamped_to_max_ttl_not_a_panic() {
    let server = ReferenceServer::start(ServerConfig { control: true, ..ServerConfig::default() }).await.unwrap();
    let knobs = Control { fat_ttl_secs: Some(u64::MAX), url_ttl_secs: Some(u64::MAX), ..Control::default() };
    let control = client().post(format!("{}/_control", server.base_url())).json(&knobs).send().await.unwrap();
    assert_eq!(control.status(), StatusCode::NO_CONTENT);
    let login = server.login("quinn").unwrap();
    assert_fat_lifetime_is_clamped(login.expires_at);
    assert_presigned_lifetime_is_clamped(&server, &login.fat, Value::Null).await;
}

#[tokio::test]
async fn huge_negative_or_garbage_expires_is_403_not_a_panic() {
    let server = server().await;
    let fat = server.login("rita").unwrap().fat;
    let url = server.media_url("sample-64x64.gif");
    let good = presigned_url_of(&presign(&client(), &server, &fat, std::slice::from_ref(&url)).await);
    let (_, query) = good.split_once('?').unwrap();
    let others: Vec<&str> = query.split('&').filter(|p| !p.starts_with("Expires=")).collect();
    let bad_expires = [
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775808",
        "-1",
        "-9223372036854775808",
        "1e30",
        "soon",
        "",
        "%FF%FE",
    ];
    for expires in bad_expires {
        let forged = format!("{url}?Expires={expires}&{}", others.join("&"));
        let response = client().get(&forged).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "Expires={expires}");
        assert!(!response.bytes().await.unwrap().starts_with(b"GIF"));
        let alone = client().get(format!("{url}?Expires={expires}")).send().await.unwrap();
        assert_eq!(alone.status(), StatusCode::FORBIDDEN, "Expires={expires} without a signature");
    }
    assert_eq!(server.stats().refusals.bad_signature, 2 * bad_expires.len() as u64);
    assert_eq!(client().get(&good).send().await.unwrap().status(), StatusCode::OK, "the server still serves");
}

#[tokio::test]
async fn a_validly_signed_far_future_expires_is_served_without_overflow() {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let key = b"a key the signer and the server share".to_vec();
    let config = ServerConfig { url_secret: Some(key.clone()), ..ServerConfig::default() };
    let server = ReferenceServer::start(config).await.unwrap();
    let url = server.media_url("sample-64x64.gif");
    for expires in [u64::MAX, 9_223_372_036_854_775_808] {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(format!("GET\n/demo/media/sample-64x64.gif\n{expires}").as_bytes());
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let signed = format!("{url}?Expires={expires}&Signature={signature}&Key-Pair-Id=K2REFERENCE");
        let response = client().get(&signed).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Expires={expires}");
    }
}

/// A media directory is served from memory once read, and the disk is asked again after a second:
/// a file removed is still served for that second, then not; a file rewritten is served new.
#[tokio::test]
async fn a_media_directory_is_served_from_memory_and_rechecked() {
    let dir = TempDir::new("dir-cache");
    let file = dir.0.join("a.png");
    std::fs::write(&file, b"\x89PNG\r\n\x1a\nfirst").unwrap();
    let server = start(ServerConfig { media_dir: Some(dir.0.clone()), ..ServerConfig::default() }).await;
    let fat = server.login("dir").unwrap().fat;
    let get = || async {
        let response = client().get(server.media_url("a.png")).bearer_auth(&fat).send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    };
    assert_eq!(get().await, (200, bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\nfirst")));
    std::fs::remove_file(&file).unwrap();
    assert_eq!(get().await.0, 200, "served from memory within the second");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get().await.0, 404, "asked the disk again");
    std::fs::write(&file, b"\x89PNG\r\n\x1a\nsecond!").unwrap();
    assert_eq!(get().await, (200, bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\nsecond!")));
}

#[tokio::test]
async fn gallery_thumbnails_are_distinct_pngs_up_to_gallery_len() {
    let server = server().await;
    let fat = server.login("gallery").unwrap().fat;
    const { assert!(GALLERY_LEN >= 500) };
    let mut seen = Vec::new();
    for index in [0, 1, 250, 499, GALLERY_LEN - 1] {
        let url = server.gallery_url(index);
        assert!(url.ends_with(&format!("/demo/media/gallery/{index:04}.png")), "{url}");
        let response = client().get(&url).bearer_auth(&fat).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{index}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(bytes, gallery_image(index).unwrap(), "{index}");
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        assert_eq!((image.width(), image.height()), (GALLERY_SIDE, GALLERY_SIDE));
        assert!(!seen.contains(&bytes), "thumbnail {index} repeats another");
        seen.push(bytes);
    }
    // Presigned like any other file.
    let presigned = presigned_url_of(&presign(&client(), &server, &fat, &[server.gallery_url(7)]).await);
    let response = client().get(&presigned).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), gallery_image(7).unwrap());
    // Past the end, or spelled another way: no such file.
    for name in [format!("gallery/{GALLERY_LEN:04}.png"), "gallery/42.png".to_owned(), "gallery/0042.jpg".to_owned()] {
        let response = client().get(server.media_url(&name)).bearer_auth(&fat).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{name}");
    }
    let stats = server.stats();
    assert_eq!((stats.served.bearer, stats.served.presigned, stats.refusals.not_found), (5, 1, 3));
}

/// Asks for `url` with `fat` in the query and as a bearer, and presigns it with `fat`: the three
/// statuses.
async fn fat_statuses(server: &RunningServer, fat: &str, url: &str) -> [StatusCode; 3] {
    let embedded = client().get(format!("{url}?fat={fat}")).send().await.unwrap().status();
    let header = client().get(url).bearer_auth(fat).send().await.unwrap().status();
    let body = serde_json::json!({ "urls": [url] });
    let presign = client().post(server.presign_url()).bearer_auth(fat).json(&body).send().await.unwrap().status();
    [embedded, header, presign]
}

#[tokio::test]
async fn expire_fats_now_refuses_every_earlier_fat_and_not_later_logins() {
    let server = server().await;
    let url = server.gallery_url(1);
    let direct = server.login("rot").unwrap().fat;
    let answered = login(&client(), &server, "rot").await["fat"].as_str().unwrap().to_owned();
    let signed_before = presigned_url_of(&presign(&client(), &server, &direct, std::slice::from_ref(&url)).await);
    for fat in [&direct, &answered] {
        assert_eq!(fat_statuses(&server, fat, &url).await, [StatusCode::OK; 3]);
    }
    server.reset_stats();

    server.faults().expire_fats_now();
    for fat in [&direct, &answered] {
        assert_eq!(fat_statuses(&server, fat, &url).await, [StatusCode::UNAUTHORIZED; 3]);
    }
    let refusals = server.stats().refusals;
    assert_eq!((refusals.expired_fat, refusals.invalid_fat), (6, 0), "refused as expired: log in again");
    // A URL signed before stays valid until its own expiry, as at a CDN.
    assert_eq!(client().get(&signed_before).send().await.unwrap().status(), StatusCode::OK);
    // Logins after the call work at once, within the same second.
    let fresh = login(&client(), &server, "rot").await["fat"].as_str().unwrap().to_owned();
    assert_eq!(fat_statuses(&server, &fresh, &url).await, [StatusCode::OK; 3]);
    assert_eq!(fat_statuses(&server, &server.login("rot").unwrap().fat, &url).await, [StatusCode::OK; 3]);
    // Resetting the faults does not bring the old ones back.
    server.faults().reset();
    assert_eq!(fat_statuses(&server, &direct, &url).await, [StatusCode::UNAUTHORIZED; 3]);
    // Expiring again catches the fresh one too.
    server.faults().expire_fats_now();
    assert_eq!(fat_statuses(&server, &fresh, &url).await, [StatusCode::UNAUTHORIZED; 3]);
}

#[tokio::test]
async fn control_expire_fats_expires_every_earlier_fat() {
    let server = start(ServerConfig { control: true, ..ServerConfig::default() }).await;
    let url = server.gallery_url(2);
    let old = server.login("ctl").unwrap().fat;
    let control =
        client().post(format!("{}/_control", server.base_url())).json(&serde_json::json!({"expire_fats": true}));
    assert_eq!(control.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(fat_statuses(&server, &old, &url).await, [StatusCode::UNAUTHORIZED; 3]);
    let new = server.login("ctl").unwrap().fat;
    assert_eq!(fat_statuses(&server, &new, &url).await, [StatusCode::OK; 3]);
    let typed = serde_json::to_value(Control { expire_fats: true, ..Control::default() }).unwrap();
    assert_eq!(typed["expire_fats"], true);
}

/// The leak counter: every request that carried a credential, a token or a presign signature,
/// on any route, once each; by kind beside it.
#[tokio::test]
async fn the_leak_counter_counts_signatures_as_well_as_tokens() {
    let server = server().await;
    let fat = server.login("leak").unwrap().fat;
    let url = server.gallery_url(3);
    let presigned = presigned_url_of(&presign(&client(), &server, &fat, std::slice::from_ref(&url)).await);
    let (_, signed_query) = presigned.split_once('?').unwrap();
    let base = server.base_url();
    let sigv4 = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20130524T000000Z&X-Amz-Signature=00";
    let no_signature = "Expires=2000000000&Key-Pair-Id=K2REFERENCE&X-Amz-Credential=AKID%2F20130524";
    // (request, carries a token, carries a signature)
    let cases = [
        (client().get(&presigned), false, true),
        (client().get(format!("{base}/elsewhere?{signed_query}")), false, true),
        (client().get(format!("{base}/_stats?signature=S")), false, true),
        (client().get(format!("{url}?%53ignature=S&Expires=1")), false, true),
        (client().get(format!("{url}?{sigv4}")), false, true),
        (client().get(format!("{base}/_stats?x-amz-signature=00")), false, true),
        (client().get(format!("{url}?fat={fat}")), true, false),
        (client().get(format!("{base}/nowhere?FAT=x")), true, false),
        (client().get(&url).bearer_auth(&fat), true, false),
        (client().get(format!("{url}?fat={fat}&{signed_query}")), true, true),
        (client().get(format!("{url}?{signed_query}")).bearer_auth(&fat), true, true),
        (client().get(format!("{url}?{no_signature}")), false, false),
        (client().get(format!("{url}?sig=S&signatures=S&x=Signature")), false, false),
        (client().get(&url), false, false),
    ];
    let expected = |pick: fn(&(bool, bool)) -> bool| {
        cases.iter().map(|(_, token, signature)| (*token, *signature)).filter(pick).count() as u64
    };
    let (tokens, signatures, either) = (expected(|c| c.0), expected(|c| c.1), expected(|c| c.0 || c.1));
    let total = cases.len() as u64;
    server.reset_stats();
    for (request, _, _) in cases {
        request.send().await.unwrap();
    }
    let stats = server.stats();
    assert_eq!(stats.requests, total);
    assert_eq!(
        (stats.requests_with_token, stats.requests_with_signature, stats.requests_with_credentials),
        (tokens, signatures, either)
    );
    assert_eq!((tokens, signatures, either), (5, 8, 11), "the table above");
    let json: Value = client().get(format!("{base}/_stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (json["requests_with_signature"].as_u64(), json["requests_with_credentials"].as_u64()),
        (Some(8), Some(11))
    );
}
