//! Property tests: a token reaches a URL or a header only when the URL's host (as a WHATWG
//! client parses it) is a configured secure host, over https.

use std::sync::Arc;

use proptest::prelude::*;
use secure_media_core::{
    resolve_str, EmbeddedStrategy, HeaderBasedStrategy, MediaAccessStrategy, MediaUrl, SecureHosts, StaticToken,
};
use url::Url;

const TOKEN: &str = "SeCrEtToKeN";
const SECURE: &[&str] = &["files-us.cometchat.io", "files-us.cometchat.com", "media-us.cometchat.io"];

fn hosts() -> SecureHosts {
    SecureHosts::cometchat("us").unwrap()
}

fn is_secure(url: &Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let host = host.strip_suffix('.').unwrap_or(host);
    url.scheme() == "https" && url.port().is_none() && SECURE.contains(&host)
}

fn host_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("files-us.cometchat.io".to_string()),
        Just("FILES-US.CometChat.io.".to_string()),
        Just("media-us.cometchat.io:443".to_string()),
        Just("files-us.cometchat.io:8443".to_string()),
        Just("files-us.cometchat.io.evil.com".to_string()),
        Just("evil.com".to_string()),
        Just("files-us.cometchat.io@evil.com".to_string()),
        Just("evil.com@files-us.cometchat.io".to_string()),
        Just("evil.com\\@files-us.cometchat.io".to_string()),
        Just("evil.com#@files-us.cometchat.io".to_string()),
        Just("files-us.cometchat%2eio".to_string()),
        Just("files-us%2ecometchat.io.evil.com".to_string()),
        Just("files-us.comet\tchat.io".to_string()),
        Just("[::1]".to_string()),
        Just("127.0.0.1".to_string()),
        Just("0".to_string()),
        Just("0x7f.1".to_string()),
        Just("1.2.3.04".to_string()),
        "[0-9x.]{1,12}",
        Just("xn--fles-us-9za.cometchat.io".to_string()),
        "[a-z0-9.@:%\\\\-]{0,24}",
    ]
}

fn scheme_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://".to_string()),
        Just("http://".to_string()),
        Just("HTTPS://".to_string()),
        Just("https:///".to_string()),
        Just("https:".to_string()),
        Just("//".to_string()),
        Just(" https://".to_string()),
        Just("ftp://".to_string()),
        Just("".to_string()),
    ]
}

fn rest_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/app/media/a.png".to_string()),
        Just("/app/media/fatima.jpg?format=png".to_string()),
        Just("/?next=https://files-us.cometchat.io/".to_string()),
        Just("?u=files-us.cometchat.io#files-us.cometchat.io".to_string()),
        Just("/a?fat=old&fat=older#frag".to_string()),
        Just("".to_string()),
        "[ -~]{0,30}",
    ]
}

fn any_url() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (scheme_piece(), host_piece(), rest_piece()).prop_map(|(s, h, r)| format!("{s}{h}{r}")),
        1 => "[ -~]{0,60}",
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn embedded_never_leaks_the_token(input in any_url()) {
        let strategy = EmbeddedStrategy::new(hosts(), Arc::new(StaticToken::parse(TOKEN).unwrap()));
        let out = strategy.embed(&input).unwrap();
        if out.contains(TOKEN) && !input.contains(TOKEN) {
            let parsed = Url::parse(&out).expect("a URL that received the token parses");
            prop_assert!(is_secure(&parsed), "token sent to {:?} (from {:?})", parsed.host_str(), input);
            prop_assert_eq!(parsed.query_pairs().filter(|(k, _)| k == "fat").count(), 1);
        }
        // Whenever a URL is secure, it gets exactly one token.
        if let Ok(parsed) = Url::parse(&input) {
            if is_secure(&parsed) {
                let out = Url::parse(&out).unwrap();
                prop_assert_eq!(out.query_pairs().filter(|(k, v)| k == "fat" && v == TOKEN).count(), 1);
            }
        }
    }

    #[test]
    fn header_mode_never_leaks_the_token(input in any_url()) {
        let strategy = HeaderBasedStrategy::new(hosts(), Arc::new(StaticToken::parse(TOKEN).unwrap()));
        let (out, resolution) = futures::executor::block_on(resolve_str(&strategy, &input)).unwrap();
        if let Some(resolution) = resolution {
            if !resolution.headers().is_empty() {
                let parsed = Url::parse(&out).expect("a URL that received the header parses");
                prop_assert!(is_secure(&parsed), "header sent to {:?} (from {:?})", parsed.host_str(), input);
                prop_assert!(!parsed.query_pairs().any(|(k, _)| k == "fat"));
            }
        }
        let _ = strategy.stats();
    }

    #[test]
    fn the_fast_path_sees_the_host_the_client_connects_to(input in any_url()) {
        if let Some(view) = MediaUrl::parse_plain(&input) {
            let full = Url::parse(&input).expect("fast-path input is a valid URL");
            let fast_host = view.host().to_ascii_lowercase();
            prop_assert_eq!(Some(fast_host.as_str()), full.host_str(), "{:?}", input);
            prop_assert_eq!(view.port(), full.port());
            prop_assert_eq!(hosts().matches(&view), hosts().matches_url(&full));
        }
    }
}
