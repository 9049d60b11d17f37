//! Real Redis peers for tests and examples: one `redis-server`, or a local Redis Cluster of three
//! masters (`redis-server --cluster-enabled yes`, joined with `redis-cli --cluster create`), each
//! started on free loopback ports and killed on drop, even when a test panics. No `redis-server`
//! is a failure, never a skip.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A `redis-server` of one node, owned by its holder.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free loopback port and waits for its `PONG`.
    ///
    /// # Panics
    /// Without `redis-server`, or if it does not answer within 10 s.
    pub fn start() -> Self {
        require("redis-server");
        let port = TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(|a| a.port()));
        let port = port.and_then(|port| port).unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut server = Self { child: None, port };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on its port, empty: nothing is persisted.
    ///
    /// # Panics
    /// If it does not answer within 10 s.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start redis-server ({e}): {INSTALL_HINT}"));
        self.child = Some(child);
        assert!(wait_for_ping(self.port, START_WITHIN), "redis-server did not start on port {}", self.port);
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

const MASTERS: usize = 3;
/// Redis puts a node's cluster bus on its port + 10000.
const BUS_OFFSET: u16 = 10000;
const START_WITHIN: Duration = Duration::from_secs(10);
const CLUSTER_OK_WITHIN: Duration = Duration::from_secs(15);
const INSTALL_HINT: &str = "Redis peers need redis-server and redis-cli (apt-get install -y redis-server)";

/// A local Redis Cluster: three masters (no replicas) that share the 16384 slots. A master down
/// leaves the others serving their slots (`cluster-require-full-coverage no`).
pub struct RedisCluster {
    dir: PathBuf,
    ports: Vec<u16>,
    /// One per node; `None` while a node is stopped.
    children: Vec<Option<Child>>,
}

impl RedisCluster {
    /// Starts three nodes, joins them and waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        require("redis-server");
        require("redis-cli");
        let mut cluster = Self { dir: fresh_dir(), ports: free_ports(), children: Vec::new() };
        // Pushed one by one so that Drop kills the nodes already started if a later one fails.
        for i in 0..MASTERS {
            let child = cluster.spawn(i);
            cluster.children.push(Some(child));
        }
        for &port in &cluster.ports {
            assert!(wait_for_ping(port, START_WITHIN), "redis-server did not answer PING on port {port}");
        }
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let output = redis_cli(&create);
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_for_cluster_ok();
        cluster
    }

    /// `redis://127.0.0.1:P` of every node, stopped ones included: what a cluster client is seeded with.
    pub fn seed_urls(&self) -> Vec<String> {
        (0..MASTERS).map(|i| self.node_url(i)).collect()
    }

    /// The URL of node `i`, for a plain (non-cluster) connection to that node only.
    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    /// Kills node `i` (a master and its slots: nothing takes over, there are no replicas).
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes node `i` (`SIGSTOP`): its connections stay open and its port accepts, but it
    /// answers nothing, as a master that hangs or sits behind a dead link.
    pub fn pause_node(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets node `i` run again after [`pause_node`](Self::pause_node), and waits for
    /// `cluster_state:ok` on every node.
    pub fn resume_node(&self, i: usize) {
        self.signal(i, "-CONT");
        self.wait_for_cluster_ok();
    }

    fn signal(&self, i: usize, signal: &str) {
        let child = self.children[i].as_ref().unwrap_or_else(|| panic!("node {i} is not running"));
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status();
        assert!(status.as_ref().is_ok_and(|status| status.success()), "kill {signal} node {i}: {status:?}");
    }

    /// Starts node `i` again on its port with its `nodes-P.conf`, so it rejoins with its slots (but no data:
    /// nothing is persisted), and waits for `cluster_state:ok` on every node.
    pub fn restart_node(&mut self, i: usize) {
        self.stop_node(i);
        let child = self.spawn(i);
        self.children[i] = Some(child);
        let port = self.ports[i];
        assert!(wait_for_ping(port, START_WITHIN), "redis-server did not answer PING on port {port} after restart");
        self.wait_for_cluster_ok();
    }

    /// The slot of `key`, as the cluster computes it (hash tags included).
    pub fn slot_of(&self, key: &str) -> u16 {
        let answer = self.ask(self.running(), &["cluster", "keyslot", key]);
        answer.trim().parse().unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {answer:?}"))
    }

    /// Which node serves `slot` now, as a running node sees it.
    pub fn owner_of(&self, slot: u16) -> usize {
        let nodes = self.ask(self.running(), &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields.get(1).and_then(|address| address.split(['@', ':']).nth(1)) else { continue };
            let serves = fields.iter().skip(8).any(|range| match range.split_once('-') {
                Some((low, high)) => (low.parse().unwrap_or(u16::MAX)..=high.parse().unwrap_or(0)).contains(&slot),
                None => range.parse() == Ok(slot),
            });
            if serves {
                return self.ports.iter().position(|p| p.to_string() == port).expect("a node of this cluster");
            }
        }
        panic!("no node serves slot {slot}: {nodes}")
    }

    /// Starts moving `slot` from node `from` to node `to` (`IMPORTING` then `MIGRATING`): until
    /// [`finish_migration`](Self::finish_migration), `from` answers `ASK` for keys it does not hold.
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.expect_ok(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        self.expect_ok(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
    }

    /// Moves the keys of `slot` from `from` to `to` (`MIGRATE`), then hands `to` the slot on every
    /// node: clients asking `from` get `MOVED` from now on.
    pub fn finish_migration(&self, slot: u16, from: usize, to: usize) {
        let slot_text = slot.to_string();
        loop {
            let keys = self.ask(from, &["cluster", "getkeysinslot", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().map(str::trim).filter(|key| !key.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = self.ports[to].to_string();
            let mut migrate = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "keys"];
            migrate.extend(keys.iter().copied());
            self.expect_ok(from, &migrate);
        }
        let to_id = self.node_id(to);
        for i in [to, from].into_iter().chain((0..MASTERS).filter(|&i| i != to && i != from)) {
            if self.children[i].is_some() {
                self.expect_ok(i, &["cluster", "setslot", &slot_text, "node", &to_id]);
            }
        }
    }

    fn node_id(&self, i: usize) -> String {
        self.ask(i, &["cluster", "myid"]).trim().to_string()
    }

    fn running(&self) -> usize {
        (0..MASTERS).find(|&i| self.children[i].is_some()).expect("a running node")
    }

    /// What `redis-cli -p <node i>` prints for one command.
    fn ask(&self, i: usize, command: &[&str]) -> String {
        let mut args = vec!["-p".to_string(), self.ports[i].to_string()];
        args.extend(command.iter().map(|arg| arg.to_string()));
        let output = redis_cli(&args);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn expect_ok(&self, i: usize, command: &[&str]) {
        let answer = self.ask(i, command);
        assert_eq!(answer.trim(), "OK", "node {i}: {command:?}");
    }

    fn spawn(&self, i: usize) -> Child {
        let port = self.ports[i].to_string();
        let config = self.dir.join(format!("nodes-{port}.conf"));
        Command::new("redis-server")
            .args(["--port", &port, "--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(&config)
            .args(["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"])
            // A master down leaves the other masters' slots served (there are no replicas).
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start redis-server ({e}): {INSTALL_HINT}"))
    }

    /// Every running node must agree: a client may ask any of them for the slot map.
    fn wait_for_cluster_ok(&self) {
        let deadline = Instant::now() + CLUSTER_OK_WITHIN;
        let running: Vec<u16> = (0..MASTERS).filter(|&i| self.children[i].is_some()).map(|i| self.ports[i]).collect();
        let mut last = String::new();
        while Instant::now() < deadline {
            let states: Vec<String> = running.iter().map(|port| cluster_state(*port)).collect();
            if states.iter().all(|state| state == "ok") {
                return;
            }
            last = format!("{states:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Redis Cluster on ports {running:?} not at cluster_state:ok within {CLUSTER_OK_WITHIN:?}: {last}");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.stop_node(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn require(program: &str) {
    match Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{program} not found: {INSTALL_HINT}"),
        Err(e) => panic!("could not run {program} ({e}): {INSTALL_HINT}"),
    }
}

fn redis_cli(args: &[String]) -> Output {
    Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run redis-cli ({e}): {INSTALL_HINT}"))
}

/// `cluster_state` from `CLUSTER INFO` (`ok` or `fail`), or what went wrong asking.
fn cluster_state(port: u16) -> String {
    let output = redis_cli(&["-p".to_string(), port.to_string(), "cluster".to_string(), "info".to_string()]);
    let info = String::from_utf8_lossy(&output.stdout);
    info.lines()
        .find_map(|line| line.trim().strip_prefix("cluster_state:").map(str::to_string))
        .unwrap_or_else(|| format!("port {port}: no cluster_state in {info:?}"))
}

/// Three distinct free loopback ports whose bus ports (+10000) are free too. The listeners are held until all
/// three are chosen so that none repeats.
fn free_ports() -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < MASTERS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port > u16::MAX - BUS_OFFSET {
            continue;
        }
        if let Ok(bus) = TcpListener::bind(("127.0.0.1", port + BUS_OFFSET)) {
            ports.push(port);
            held.push((listener, bus));
        }
    }
    ports
}

fn fresh_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "sm-redis-cluster-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
    dir
}

fn wait_for_ping(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut answer = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG\r\n"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
