//! Bad input (issue 16) over real HTTPS on 127.0.0.1: `Range` values and media paths, written
//! byte for byte on a TLS stream (a client library would normalise `..` and refuse raw bytes),
//! against one reference server. The parsers themselves run thousands of cases in
//! `src/media.rs` (`parser_props`); here the worst seeds and a few dozen generated requests.
//!
//! Generated requests: `PROPTEST_CASES / 64` per property (32 when unset). The long run:
//! `PROPTEST_CASES=200000 cargo test -p secure-media-server --all-features --test parsers --release`.

mod common;

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use secure_media_server::{client_config_trusting, samples, RunningServer, ServerConfig, SAMPLE_NAMES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// A few dozen requests unless `PROPTEST_CASES` says otherwise (each one is a TLS handshake).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse::<u32>().ok()).unwrap_or(2048).div_ceil(64)
}

/// One server and runtime for every request of this file.
struct Fixture {
    runtime: Runtime,
    server: RunningServer,
    fat: String,
    tls: tokio_rustls::TlsConnector,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = runtime.block_on(common::start(ServerConfig::https()));
        let fat = server.login("alice").unwrap().fat;
        let config = client_config_trusting(server.ca_pem().unwrap()).unwrap();
        Fixture { runtime, server, fat, tls: tokio_rustls::TlsConnector::from(Arc::new(config)) }
    })
}

/// What came back: status, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `GET <target>` with the bearer FAT and `extra` header lines, as raw bytes over TLS.
fn get(target: &[u8], extra: &[u8]) -> Answer {
    let f = fixture();
    f.runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(f.server.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = f.tls.connect(name, tcp).await.unwrap();
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n", f.server.addr(), f.fat).as_bytes(),
        );
        request.extend_from_slice(extra);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        // The server may answer (and close) before it read a huge request: read what came.
        let _ = tls.write_all(&request).await;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut raw)).await;
        parse(&raw)
    })
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no answer: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Answer { status, headers, body: raw[split + 4..].to_vec() }
}

const GIF: &str = "sample-64x64.gif";

fn gif() -> &'static [u8] {
    &samples().iter().find(|s| s.name == GIF).unwrap().bytes
}

fn range(value: &[u8]) -> Answer {
    let mut extra = b"Range: ".to_vec();
    extra.extend_from_slice(value);
    extra.extend_from_slice(b"\r\n");
    get(format!("/demo/media/{GIF}").as_bytes(), &extra)
}

/// Whatever the `Range`: the whole file (200), exactly the bytes `Content-Range` names (206), a
/// 416 naming the length, or a 400 for a header value HTTP itself refuses; never a 5xx.
fn check_range(value: &[u8], answer: &Answer) -> Result<(), TestCaseError> {
    let file = gif();
    let len = file.len();
    match answer.status {
        200 => prop_assert_eq!(&answer.body[..], file, "{:?}", String::from_utf8_lossy(value)),
        206 => {
            let content_range = answer.header("content-range").unwrap_or_default();
            let spec = content_range.strip_prefix("bytes ").and_then(|r| r.strip_suffix(&format!("/{len}")));
            let (start, end) = spec.and_then(|s| s.split_once('-')).expect("bytes <start>-<end>/<len>");
            let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
            prop_assert!(start <= end && end < len);
            prop_assert_eq!(&answer.body[..], &file[start..=end]);
            let length = (end - start + 1).to_string();
            prop_assert_eq!(answer.header("content-length"), Some(length.as_str()));
        }
        416 => {
            let expected = format!("bytes */{len}");
            prop_assert_eq!(answer.header("content-range"), Some(expected.as_str()));
            prop_assert!(answer.body.is_empty());
        }
        400 | 431 => {}
        other => prop_assert!(false, "{} for Range {:?}", other, String::from_utf8_lossy(value)),
    }
    Ok(())
}

/// Whatever the path: a 400 or 404 (or another 4xx HTTP refuses it with), never a file other than
/// the sample it names, never a 5xx; a refusal carries no byte of any file.
fn check_path(target: &[u8], answer: &Answer) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(&target[..target.len().min(200)]).into_owned();
    prop_assert!((400..500).contains(&answer.status) || answer.status == 200, "{} for {:?}", answer.status, shown);
    if answer.status == 200 {
        // The name before any query or fragment (which HTTP drops from the path).
        let name = target
            .strip_prefix(b"/demo/media/")
            .map(|n| n.split(|b| matches!(b, b'?' | b'#')).next().unwrap_or(n))
            .and_then(|n| std::str::from_utf8(n).ok());
        prop_assert!(name.is_some_and(|n| SAMPLE_NAMES.contains(&n)), "200 for {:?}", shown);
    } else {
        prop_assert!(answer.body.len() < 512, "{} bytes in a refusal of {:?}", answer.body.len(), shown);
    }
    Ok(())
}

fn media_target(path: &[u8]) -> Vec<u8> {
    let mut target = b"/demo/media/".to_vec();
    target.extend_from_slice(path);
    target
}

#[test]
fn the_worst_range_values_get_a_whole_file_a_slice_or_a_416() {
    let len = gif().len();
    for (value, status) in [
        (&b"bytes=0-0"[..], 206),
        (b"bytes=-1", 206),
        (b"bytes=0-18446744073709551615", 206),
        (b"bytes=0-18446744073709551616", 200),
        (b"bytes=18446744073709551615-", 416),
        (b"bytes=-18446744073709551616", 200),
        (b"bytes=-0", 416),
        (b"bytes=0-1,2-3", 200),
        (b"bytes=0-1,,", 200),
        (b"bytes=5-1", 200),
        (b"bytes=--1", 200),
        (b"bytes=", 200),
        (b"bytes=-", 200),
        (b"bytes= 0 - 9 ", 206),
        (b"  bytes=0-9\t", 206),
        (b"items=0-9", 200),
        (b"bytes=0x10-", 200),
        (b"bytes=1.5-2", 200),
        (b"bytes=\xff-1", 200),
        (b"bytes=0-9\x00", 400),
    ] {
        let answer = range(value);
        check_range(value, &answer).unwrap();
        assert_eq!(answer.status, status, "{:?}", String::from_utf8_lossy(value));
    }
    let past = format!("bytes={len}-");
    assert_eq!(range(past.as_bytes()).status, 416);
    let last = format!("bytes={}-", len - 1);
    assert_eq!(range(last.as_bytes()).body, &gif()[len - 1..]);
    let huge = format!("bytes={}", "0-1,".repeat(20_000));
    check_range(huge.as_bytes(), &range(huge.as_bytes())).unwrap();
}

#[test]
fn the_worst_paths_are_refused_and_the_server_keeps_serving() {
    for (path, statuses) in [
        (&b"../../etc/passwd"[..], &[400, 404][..]),
        (b"%2e%2e/%2e%2e/etc/passwd", &[400]),
        (b"..%2F..%2Fetc%2Fpasswd", &[400]),
        (b"%2E%2E%5C%2E%2E%5Cetc", &[400]),
        (b"./sample-64x64.gif", &[400]),
        (b"sample-64x64.gif/..", &[400]),
        (b"sample-64x64.gif%2F..%2Fsample-64x64.gif", &[400]),
        (b"a//b", &[400]),
        (b"%2Fetc%2Fpasswd", &[400]),
        (b"%00", &[400]),
        (b"sample-64x64.gif%00.png", &[400]),
        (b"sample-64x64.gif\x00", &[400]),
        (b"%FF%FE", &[400]),
        (b"\xff\xfe", &[400]),
        (b"a\\..\\b", &[400]),
        (b"%5C", &[400]),
        (b"C:%5Cwindows", &[400]),
        (b"..", &[400, 404]),
        (b"%2e", &[400]),
        (b"sample-64x64.gif?fat=x", &[401]), // a bad `fat` in the query wins over the bearer
        (b"sample-64x64.gif#x", &[200, 400]),
        (b"nope.gif", &[404]),
    ] {
        let target = media_target(path);
        let answer = get(&target, b"");
        check_path(&target, &answer).unwrap();
        assert!(statuses.contains(&answer.status), "{} for {:?}", answer.status, String::from_utf8_lossy(path));
    }
    let huge = media_target(&b"a/".repeat(50_000));
    let answer = get(&huge, b"");
    check_path(&huge, &answer).unwrap();
    // Still serving.
    let answer = get(format!("/demo/media/{GIF}").as_bytes(), b"");
    assert_eq!((answer.status, &answer.body[..]), (200, gif()));
}

fn range_value() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        (0usize..2_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        proptest::sample::select(&["", "18446744073709551616", "+3", "-0", " 7 "][..]).prop_map(str::to_owned),
    ];
    let spec = (number.clone(), number).prop_map(|(a, b)| format!("{a}-{b}"));
    prop_oneof![
        4 => spec.clone().prop_map(|s| format!("bytes={s}").into_bytes()),
        1 => proptest::collection::vec(spec, 2..4).prop_map(|s| format!("bytes={}", s.join(",")).into_bytes()),
        1 => proptest::collection::vec(any::<u8>().prop_filter("one header line", |b| !matches!(b, b'\r' | b'\n')), 0..24),
    ]
}

fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
    const SEGMENTS: &[&[u8]] = &[
        b"sample-64x64.gif",
        b"..",
        b".",
        b"",
        b"%2e%2e",
        b"%2E.",
        b"%2F",
        b"%5C",
        b"%00",
        b"%FF",
        b"\\",
        b"a",
        b"%",
        b"%zz",
        b"\xc3\xbc",
        b"~",
    ];
    let segment = proptest::sample::select(SEGMENTS);
    prop_oneof![
        4 => proptest::collection::vec(segment, 1..6).prop_map(|segments| segments.join(&b"/"[..])),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no space or line break", |b| !matches!(b, b' ' | b'\r' | b'\n')), 0..24),
    ]
}

/// Runs `check` over `strategy` for `cases()` cases: its own runner, since inside `proptest!`
/// proptest 1.12 applies `PROPTEST_CASES` over the count given (`contextualize_config`).
fn run_scaled<S: Strategy>(strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases()));
    if let Err(failure) = runner.run(&strategy, check) {
        panic!("{failure}");
    }
}

#[test]
fn generated_range_values_over_https() {
    run_scaled(range_value(), |value| check_range(&value, &range(&value)));
}

#[test]
fn generated_paths_over_https() {
    run_scaled(path_bytes(), |path| {
        let target = media_target(&path);
        check_path(&target, &get(&target, b""))
    });
}
