//! The one HTTP client every command uses (login, presign, fetch, doctor's probes): built from
//! [`secure_media_reqwest::client_builder`], so https works out of the box, trusting the platform's
//! roots plus the CAs named by `--ca-cert` and `SSL_CERT_FILE`.

use std::path::PathBuf;
use std::time::Duration;

use crate::Failure;

/// Long enough for a slow network, short enough that a black-holed address does not hang a script.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The client for `--ca-cert` files (and `SSL_CERT_FILE`); a file that cannot be read or holds no
/// certificate is a usage error that names it.
pub(crate) fn http_client(ca_certs: &[PathBuf]) -> Result<reqwest::Client, Failure> {
    let builder = secure_media_reqwest::client_builder().connect_timeout(CONNECT_TIMEOUT);
    let (builder, trusted) = trust(builder, &ca_files(ca_certs))?;
    builder.build().map_err(|error| {
        let why = secure_media_reqwest::network_error(error);
        if trusted.is_empty() {
            Failure::other(format!("cannot set up the HTTP client: {}", why.detail()))
        } else {
            Failure::usage(format!("cannot trust {}: {}", trusted.join(", "), why.detail()))
        }
    })
}

/// A CA file and where the user named it (`--ca-cert ` or `SSL_CERT_FILE=`), for messages.
struct CaFile {
    source: &'static str,
    path: PathBuf,
}

impl CaFile {
    /// `--ca-cert FILE` or `SSL_CERT_FILE=FILE`.
    fn named(&self) -> String {
        format!("{}{}", self.source, self.path.display())
    }
}

fn ca_files(ca_certs: &[PathBuf]) -> Vec<CaFile> {
    let flags = ca_certs.iter().map(|path| CaFile { source: "--ca-cert ", path: path.clone() });
    // The variable OpenSSL and most TLS clients read: honoured here too, in addition to the flags.
    let env = std::env::var_os("SSL_CERT_FILE")
        .filter(|value| !value.is_empty())
        .map(|path| CaFile { source: "SSL_CERT_FILE=", path: PathBuf::from(path) });
    flags.chain(env).collect()
}

/// Adds every certificate of `files` to the roots; answers the builder and the files' names.
#[cfg(any(feature = "rustls", feature = "native-tls"))]
fn trust(
    mut builder: reqwest::ClientBuilder,
    files: &[CaFile],
) -> Result<(reqwest::ClientBuilder, Vec<String>), Failure> {
    for file in files {
        builder = builder.tls_certs_merge(read_pem(file)?);
    }
    Ok((builder, files.iter().map(CaFile::named).collect()))
}

#[cfg(not(any(feature = "rustls", feature = "native-tls")))]
fn trust(builder: reqwest::ClientBuilder, files: &[CaFile]) -> Result<(reqwest::ClientBuilder, Vec<String>), Failure> {
    match files.first() {
        None => Ok((builder, Vec::new())),
        Some(file) => {
            Err(Failure::usage(format!("{}: this build has no TLS (features rustls or native-tls)", file.named())))
        }
    }
}

#[cfg(any(feature = "rustls", feature = "native-tls"))]
fn read_pem(file: &CaFile) -> Result<Vec<reqwest::Certificate>, Failure> {
    let named = file.named();
    let pem = std::fs::read(&file.path).map_err(|error| Failure::usage(format!("{named}: cannot read it: {error}")))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| Failure::usage(format!("{named}: not a valid PEM certificate file")))?;
    if certificates.is_empty() {
        return Err(Failure::usage(format!("{named}: no certificate in it (expected -----BEGIN CERTIFICATE-----)")));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_a_usage_error_naming_it() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let failure = http_client(std::slice::from_ref(&missing)).unwrap_err();
        assert!(failure.message().starts_with("--ca-cert /nonexistent/ca.pem: cannot read it"), "{failure:?}");

        let dir = std::env::temp_dir().join(format!("secure-media-cli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let failure = http_client(std::slice::from_ref(&not_pem)).unwrap_err();
        assert!(failure.message().contains("no certificate in it"), "{failure:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
