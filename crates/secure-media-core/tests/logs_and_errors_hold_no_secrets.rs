//! Every decision logs (hit, miss, presign, refusal, refresh, retry); no log line, error or Debug
//! output carries a token or a signature.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::StatusCode;
use secure_media_core::presigned::{Presigned, PresignedStrategy, Presigner};
use secure_media_core::*;

const TOKEN: &str = "tok3n-s3cr3t";
const SIGNATURE: &str = "SIGNATURE-VALUE";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Signer;

#[async_trait]
impl Presigner for Signer {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        if token.expose_secret() == "refused" {
            return Err(AccessError::PresignUnauthorized { status: StatusCode::UNAUTHORIZED });
        }
        Ok(Presigned { url: format!("{url}?Expires=4000000000&Signature={SIGNATURE}&Key-Pair-Id=K"), expires_at: None })
    }
}

#[test]
fn logs_errors_and_debug_output_never_show_a_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut shown = Vec::<String>::new();
    tracing::subscriber::with_default(subscriber, || {
        futures::executor::block_on(async {
            // No quiet period: the token the presigned renewal installs is refused again below, and
            // that refusal must renew and log its retry.
            let cell = Arc::new(
                LoginCell::new()
                    .with_relogin(|| async { FileAccessToken::new(TOKEN) })
                    .with_quiet_period(std::time::Duration::ZERO),
            );
            let first = cell.set(FileAccessToken::new("refused").unwrap());
            shown.push(format!("{first:?} {first} {cell:?}"));
            let hosts = SecureHosts::cometchat("us").unwrap();
            let url = url::Url::parse("https://files-us.cometchat.io/app/media/a.png?fat=old").unwrap();
            let view = MediaUrl::from_url(&url).unwrap();

            let presigned = PresignedStrategy::new(hosts.clone(), cell.clone(), Signer);
            let resolution = presigned.resolve(&view).await.unwrap(); // refused, refreshed, presigned
            shown.push(format!("{resolution:?} {presigned:?}"));
            presigned.resolve(&view).await.unwrap(); // hit
            presigned.rejected(&view, &resolution, StatusCode::FORBIDDEN).await; // refusal, retry

            for strategy in [
                Arc::new(EmbeddedStrategy::new(hosts.clone(), cell.clone())) as Arc<dyn MediaAccessStrategy>,
                Arc::new(HeaderBasedStrategy::new(hosts.clone(), cell.clone())),
            ] {
                let resolution = strategy.resolve(&view).await.unwrap();
                shown.push(format!("{resolution:?}"));
                strategy.rejected(&view, &resolution, StatusCode::UNAUTHORIZED).await;
                strategy.rejected(&view, &resolution, StatusCode::FORBIDDEN).await;
            }

            let errors = [
                FileAccessToken::new(format!("{TOKEN}.x")).unwrap_err(),
                FileAccessToken::new(format!("{TOKEN} x")).unwrap_err(),
                EmbeddedStrategy::new(hosts.clone(), Arc::new(LoginCell::new())).resolve(&view).await.unwrap_err(),
            ];
            for error in errors {
                shown.push(format!("{error} {error:?}"));
            }

            // Every refresh failure, with its source chain: none names the refused token.
            let fixed = StaticToken::parse(TOKEN).unwrap();
            let no_hook = LoginCell::new();
            let failing = LoginCell::new().with_relogin(|| async {
                Err(AccessError::Status { url: "https://login.example.com/".into(), status: StatusCode::BAD_GATEWAY })
            });
            let refresh_errors = [
                fixed.refresh(&fixed.current().unwrap()).await.unwrap_err(),
                no_hook.refresh(&no_hook.set(FileAccessToken::new(TOKEN).unwrap())).await.unwrap_err(),
                failing.refresh(&failing.set(FileAccessToken::new(TOKEN).unwrap())).await.unwrap_err(),
                failing.refresh(&failing.current().unwrap()).await.unwrap_err(), // backing off
            ];
            for error in refresh_errors {
                assert!(matches!(error, AccessError::RefreshFailed(_)), "{error:?}");
                let mut cause: Option<&dyn std::error::Error> = Some(&error);
                while let Some(current) = cause {
                    shown.push(format!("{current} {current:?}"));
                    cause = current.source();
                }
            }
            let endpoint = presigned::endpoint::check_endpoint(&format!("http://api.example.com/p?fat={TOKEN}"), false);
            let endpoint = AccessError::from(endpoint.unwrap_err());
            shown.push(format!("{endpoint} {endpoint:?}"));
        });
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for needle in ["presign call", "cache miss", "renewing", "refused", "retrying once"] {
        assert!(logs.contains(needle), "no log for {needle:?}:\n{logs}");
    }
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(TOKEN), "token in {text}");
        assert!(!text.contains(SIGNATURE), "signature in {text}");
        assert!(!text.contains("Key-Pair-Id=K"), "signed URL in {text}");
    }
}
