//! A strategy of your own: nginx's `secure_link` module (`?md5=<base64url md5 of "$expires$uri
//! secret">&expires=<unix>`), a scheme many self-hosted media servers use. The strategy is the
//! 25 lines between the markers (struct, constructor, trait impl); the rest starts nginx (nginx-light, on a free loopback port,
//! with a test CA) and loads one image through both stacks.
//!
//! ```sh
//! cargo run --example secure_link
//! ```

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use md5::{Digest, Md5};
use secure_media::{AccessError, Credentials, MediaAccessStrategy, MediaUrl, ParamValue, Resolution, SecureHosts};

// --- the strategy ---------------------------------------------------------------------------
/// Signs URLs for nginx `secure_link_md5 "$secure_link_expires$uri <secret>"`.
pub struct SecureLink {
    hosts: SecureHosts,
    secret: String,
    lifetime: Duration,
}

impl SecureLink {
    pub fn new(hosts: SecureHosts, secret: &str, lifetime: Duration) -> Self {
        Self { hosts, secret: secret.into(), lifetime }
    }
}

impl MediaAccessStrategy for SecureLink {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }
    fn credentials(&self) -> &Credentials {
        static SIGNATURE: LazyLock<Credentials> = LazyLock::new(|| Credentials::new().param("md5").param("expires"));
        &SIGNATURE
    }
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let expires = (SystemTime::now().duration_since(UNIX_EPOCH).ok()? + self.lifetime).as_secs().to_string();
        let md5 = Md5::digest(format!("{expires}{} {}", url.decoded_path(), self.secret)); // nginx's $uri
        let params = [("md5", ParamValue::new(URL_SAFE_NO_PAD.encode(md5))), ("expires", ParamValue::new(expires))];
        Some(Ok(Resolution::set_params(params)))
    }
}
// --- end of the strategy --------------------------------------------------------------------

/// nginx checking `secure_link` for `/demo/media/` (expired or wrong: 403, which earns the one
/// retry), serving files from its root; `/demo/moved/` answers 302 to `elsewhere`, echoing the
/// query (signature and all) into `Location`, as careless servers do.
pub fn nginx(secret: &str, elsewhere: &str) -> secure_media_testkit::nginx::Nginx {
    let check = format!(
        r#"            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri {secret}";
            if ($secure_link = "") {{ return 403; }}
            if ($secure_link = "0") {{ return 403; }}"#
    );
    let locations = format!(
        r#"        location /demo/media/ {{
{check}
            root {{root}};
        }}
        location /demo/moved/ {{
{check}
            return 302 {elsewhere}/landing$is_args$args;
        }}"#
    );
    let nginx = secure_media_testkit::nginx::Nginx::reserve().start_serving(&locations);
    let media = nginx.root().join("demo/media");
    std::fs::create_dir_all(&media).expect("nginx's media directory");
    for sample in secure_media_server::samples() {
        std::fs::write(media.join(sample.name), &sample.bytes).expect("a sample file");
    }
    // A name nginx decodes before hashing: the signer must hash the decoded path too.
    std::fs::write(media.join("a b ü.png"), &secure_media_server::samples()[0].bytes).expect("a sample file");
    nginx
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let nginx = nginx("the secret nginx and the app share", "https://elsewhere.example");
    let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(SecureLink::new(
        SecureHosts::new().with_host(&nginx.host())?,
        "the secret nginx and the app share",
        Duration::from_secs(300),
    ));
    let url = format!("{}/demo/media/sample-640x480.png", nginx.base_url());

    // nginx's certificate comes from the test CA: both clients trust it, and only it.
    let ca = reqwest::Certificate::from_pem(nginx.ca_pem().as_bytes())?;
    let builder = secure_media_reqwest::client_builder().tls_certs_only([ca]);
    let client = secure_media_reqwest::secure_client_from(builder, strategy.clone())?;
    let response = client.get(&url).send().await?;
    let (status, shown) = (response.status(), response.url().to_string());
    println!("reqwest: {status} {shown} ({} bytes)", response.bytes().await?.len());

    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(secure_media_server::client_config_trusting(nginx.ca_pem())?)
        .https_only()
        .enable_http1()
        .build();
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(https);
    let service =
        tower::ServiceBuilder::new().layer(secure_media_tower::SecureMediaLayer::new(strategy)).service(hyper);
    let response = service.oneshot(http::Request::get(&url).body(Default::default())?).await?;
    let status = response.status();
    println!("tower:   {status} ({} bytes)", response.into_body().collect().await?.to_bytes().len());
    Ok(())
}
