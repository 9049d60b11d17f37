//! nginx as a TLS peer we did not write: it terminates https with a certificate from
//! [`test_ca`](crate::test_ca) and reverse-proxies to a plain-http upstream (the reference
//! server), so the clients' TLS is tested against a server other than our own.
//!
//! ```no_run
//! # async fn run() {
//! use secure_media_server::{ReferenceServer, ServerConfig};
//! use secure_media_testkit::nginx::Nginx;
//!
//! // The proxy's origin is known before the server starts: the server signs URLs on it.
//! let port = Nginx::reserve();
//! let config = ServerConfig { public_origins: vec![port.origin()], ..ServerConfig::default() };
//! let server = ReferenceServer::start(config).await.unwrap();
//! let nginx = port.start_tls_proxy(server.addr());
//! assert!(nginx.base_url().starts_with("https://127.0.0.1:"));
//! // Clients trust secure_media_testkit::test_ca() and fetch from nginx.base_url().
//! # }
//! ```
//!
//! The nginx binary is `$NGINX` when set, else `nginx` on `PATH`, else `/usr/sbin/nginx` (where
//! Debian installs it, often not on a non-login shell's `PATH`). No nginx is a panic that says
//! how to install it, never a skipped test.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming the nginx binary to run (a path), when it is not on `PATH`
/// or `/usr/sbin`.
pub const NGINX_ENV: &str = "NGINX";

/// How long nginx may take to listen before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nginx may take to stop after `SIGTERM` before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A free loopback port reserved for an nginx proxy: its [`origin`](Self::origin) is known before
/// the upstream starts (the reference server must list it in `ServerConfig::public_origins`).
///
/// The port is free when reserved and nginx binds it at [`start_tls_proxy`](Self::start_tls_proxy);
/// another process could take it in between (as with any "pick a free port" fixture), and then
/// the start panics with nginx's bind error rather than talk to the wrong server.
#[derive(Debug)]
pub struct NginxPort {
    port: u16,
}

impl NginxPort {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT`: the origin clients will reach the proxy on.
    pub fn origin(&self) -> String {
        format!("https://{}", self.host())
    }

    /// `127.0.0.1:PORT`: the secure host for clients of the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts nginx on this port, terminating TLS and proxying to `upstream` over plain http.
    ///
    /// # Panics
    /// If nginx is not installed, or does not listen within 10 s (the panic shows its error log).
    pub fn start_tls_proxy(self, upstream: SocketAddr) -> Nginx {
        Nginx::start(self.port, &proxy_location(upstream))
    }

    /// Starts nginx on this port over TLS with `locations` (nginx `location` blocks) as its
    /// server's body. `{root}` in them names a fresh directory ([`Nginx::root`]) to serve files
    /// from.
    ///
    /// # Panics
    /// As [`start_tls_proxy`](Self::start_tls_proxy).
    pub fn start_serving(self, locations: &str) -> Nginx {
        Nginx::start(self.port, locations)
    }
}

/// An nginx this process started: TLS on `127.0.0.1:PORT` with a certificate for `127.0.0.1`
/// and `localhost` from [`test_ca`](crate::test_ca), every request proxied to a plain-http
/// upstream as it came (path and query untouched, `Authorization` and `Range` passed on, the
/// answer streamed). Its files live in a fresh temporary directory; dropping it stops nginx
/// (`SIGTERM`, then waits) and removes the directory.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    // Dropped after `child` is stopped (see `Drop`): nginx's files outlive nginx.
    dir: TempDir,
}

impl Nginx {
    /// Reserves a free loopback port for a proxy whose origin must be known first; then
    /// [`NginxPort::start_tls_proxy`].
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn reserve() -> NginxPort {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("no free loopback port: {e}")).port();
        NginxPort { port }
    }

    /// Starts nginx on a free loopback port as a TLS proxy to `upstream` (plain http). For an
    /// upstream that must know the proxy's origin before it starts, [`reserve`](Self::reserve)
    /// first.
    ///
    /// # Panics
    /// If nginx is not installed, or does not listen within 10 s (the panic shows its error log).
    pub fn start_tls_proxy(upstream: SocketAddr) -> Nginx {
        Self::reserve().start_tls_proxy(upstream)
    }

    fn start(port: u16, locations: &str) -> Nginx {
        let binary = nginx_binary();
        let dir = TempDir::new();
        let root = dir.path().join("www");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("nginx root: {e}"));
        let locations = locations.replace("{root}", &quoted(&root));
        let issued = crate::test_ca()
            .issue(&["127.0.0.1", "localhost"], false)
            .unwrap_or_else(|e| panic!("a certificate for nginx: {e}"));
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        write_file(&cert, issued.cert_pem.as_bytes(), 0o644);
        write_file(&key, issued.key_pem.as_bytes(), 0o600);
        let config = dir.path().join("nginx.conf");
        write_file(&config, config_text(dir.path(), port, &locations, &cert, &key).as_bytes(), 0o644);
        // nginx writes to stderr before it opens its error log (and when it cannot).
        let stderr = fs::File::create(dir.path().join("stderr.log")).unwrap_or_else(|e| panic!("nginx stderr: {e}"));
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx ({}): {e}; set {NGINX_ENV} to its path", binary.display()));
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_until_listening();
        nginx
    }

    /// Waits until nginx has written its pid file (it does so after binding its port, so a
    /// listener there is nginx, not whoever took the port) and the port accepts TCP.
    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.dir.path().join("nginx.pid");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited at start ({status}) on port {}:\n{}", self.port, self.logs());
            }
            let ours = fs::read_to_string(&pid_file).is_ok_and(|pid| pid.trim() == self.child.id().to_string());
            if ours && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("nginx did not listen on port {} within {START_TIMEOUT:?}:\n{}", self.port, self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory `{root}` names in [`NginxPort::start_serving`]'s locations.
    pub fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("www")
    }

    /// `https://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("https://{}", self.host())
    }

    /// `127.0.0.1:PORT`: the secure host for clients of the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM certificate of the CA that issued nginx's certificate ([`test_ca`](crate::test_ca)):
    /// what clients must trust.
    pub fn ca_pem(&self) -> &'static str {
        crate::test_ca().ca_pem()
    }

    /// nginx's error log and anything it wrote to stderr, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for name in ["error.log", "stderr.log"] {
            let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            if !text.trim().is_empty() {
                let _ = write!(logs, "--- {name}\n{text}");
            }
        }
        if logs.is_empty() {
            logs.push_str("(nginx logged nothing)");
        }
        logs
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; a SIGKILLed master would leave them running.
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx configuration: everything nginx writes goes into `dir`.
fn config_text(dir: &Path, port: u16, locations: &str, cert: &Path, key: &Path) -> String {
    let path = |name: &str| quoted(&dir.join(name));
    // As root, the master would switch its workers to `nobody`, who may not reach `dir`.
    let user = if effective_uid_is_root() { "user root;\n" } else { "" };
    format!(
        r#"# Written by secure-media-testkit: nginx over TLS (a proxy, or files behind secure_link)
daemon off;
master_process on;
worker_processes 1;
{user}pid {pid};
lock_file {lock};
error_log {error_log} info;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {client_body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
{locations}
    }}
}}
"#,
        pid = path("nginx.pid"),
        lock = path("nginx.lock"),
        error_log = path("error.log"),
        client_body = path("client_body_temp"),
        proxy = path("proxy_temp"),
        fastcgi = path("fastcgi_temp"),
        uwsgi = path("uwsgi_temp"),
        scgi = path("scgi_temp"),
        cert = quoted(cert),
        key = quoted(key),
    )
}

/// nginx as a TLS proxy in front of a plain-http upstream.
fn proxy_location(upstream: SocketAddr) -> String {
    format!(
        r#"        location / {{
            # No URI part after the address: nginx passes the request line as the client sent
            # it (not re-encoded), so a signature over the path still matches upstream.
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }}"#
    )
}

/// A path as an nginx string literal.
fn quoted(path: &Path) -> String {
    let text = path.to_str().unwrap_or_else(|| panic!("nginx needs a UTF-8 path: {}", path.display()));
    assert!(!text.contains(['"', '\\', '$']), "a path nginx cannot quote: {text}");
    format!("\"{text}\"")
}

/// Reads the effective uid from `/proc/self/status` (`Uid: real effective saved fs`); `false`
/// when it cannot be read.
fn effective_uid_is_root() -> bool {
    fs::read_to_string("/proc/self/status").ok().is_some_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// `$NGINX`, `nginx` on `PATH`, or the usual sbin directories.
///
/// # Panics
/// If none is there: the test needs nginx and says how to get it.
fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(NGINX_ENV).filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("nginx")).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallbacks = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"].map(PathBuf::from);
    on_path.into_iter().chain(fallbacks).find(|path| path.is_file()).unwrap_or_else(|| {
        panic!(
            "nginx is needed for this test and was not found on PATH or in /usr/sbin: install it \
             (apt-get install -y nginx-light) or set {NGINX_ENV} to its path"
        )
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A directory of its own under the system's temporary directory, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("secure-media-nginx-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream address nothing is asked of: these tests send no request.
    const UPSTREAM: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

    #[test]
    fn dropping_nginx_stops_it_and_removes_its_files() {
        let nginx = Nginx::start_tls_proxy(UPSTREAM);
        let (dir, port) = (nginx.dir.path().to_owned(), nginx.port());
        assert!(dir.join("nginx.conf").is_file() && dir.join("key.pem").is_file());
        assert_eq!(nginx.base_url(), format!("https://127.0.0.1:{port}"));
        drop(nginx);
        assert!(!dir.exists(), "{} is left behind", dir.display());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nginx still listens on {port}");
    }

    #[test]
    #[should_panic(expected = "nginx exited at start")]
    fn a_port_taken_before_nginx_binds_it_is_a_clear_failure() {
        let port = Nginx::reserve();
        // Whoever took the port in between: nginx must not be reported as listening there.
        let _taken = TcpListener::bind(("127.0.0.1", port.port())).unwrap();
        let _ = port.start_tls_proxy(UPSTREAM);
    }
}
