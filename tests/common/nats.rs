//! A real NATS JetStream cluster for cluster mode's tests: three
//! `nats-server`s (Debian's package, installed by `tests/lab/lab.sh deps`)
//! routed to each other on loopback, plus a leaf node dialing out to them
//! as a region behind a bastion would. Each test starts its own, on free
//! ports, with its stores in the test's directory; drop kills them all.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `nats-server` process.
pub struct Node {
    /// The process.
    pub child: Option<Child>,
    /// Its client port.
    pub port: u16,
    /// Its monitoring port (`/healthz`).
    pub http: u16,
    /// Its config file (to start it again).
    pub config: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl Node {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let child = Command::new(nats_server())
            .args(["-c", self.config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether its `/healthz` answers 200 (for a JetStream node: its
    /// JetStream is current with the cluster).
    fn healthy(&self, js: bool) -> bool {
        let path = if js {
            "/healthz?js-enabled-only=true"
        } else {
            "/healthz"
        };
        http_ok(self.http, path)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three routed JetStream servers and one leaf node.
pub struct NatsCluster {
    /// n1, n2, n3.
    pub nodes: Vec<Node>,
    /// The leaf node (no JetStream of its own: it reaches the hub's).
    pub leaf: Node,
}

fn nats_server() -> &'static str {
    if Path::new("/usr/sbin/nats-server").exists() {
        "/usr/sbin/nats-server"
    } else {
        "nats-server"
    }
}

/// Whether `nats-server` is installed; tests that need it fail loudly
/// under `DROVER_REQUIRE_LAB` when it is not.
pub fn available() -> bool {
    Command::new(nats_server())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A port no other test of this process was given, free now, and below
/// Linux's ephemeral range (32768-60999): the kernel's port 0 is taken
/// from that range, and the many local connections of the tests beside
/// (HTTP clients, NATS clients) take their source ports from it too, so
/// a port picked there could be in use again before nats-server binds it
/// (a cluster node that cannot bind its route port never comes up).
fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    // Spread by process id and time: two test processes start apart.
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    for i in 0..12_000u64 {
        let port = 20_000 + ((seed.wrapping_mul(2_654_435_761) + i * 7_919) % 12_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000-31999")
}

/// GET `path` on 127.0.0.1:`port`: whether it answered 200.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

impl NatsCluster {
    /// Start the three servers and the leaf under `dir`; returns once the
    /// JetStream cluster is healthy and the leaf is connected.
    pub fn start(dir: &Path) -> NatsCluster {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let leaf_port = free_port();
        let mut nodes = Vec::new();
        for (i, &(client, route, http)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("\"nats-route://127.0.0.1:{}\"", p.1))
                .collect();
            let store = dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&store).unwrap();
            let leafnodes = if i == 0 {
                format!("leafnodes {{ listen: \"127.0.0.1:{leaf_port}\" }}\n")
            } else {
                String::new()
            };
            let config = dir.join(format!("n{}.conf", i + 1));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{n}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{http}\"\n\
                     jetstream {{ store_dir: \"{store}\", domain: hub }}\n\
                     cluster {{ name: drover-test, listen: \"127.0.0.1:{route}\", routes: [{routes}] }}\n{leafnodes}",
                    n = i + 1,
                    store = store.display(),
                    routes = routes.join(", "),
                ),
            )
            .unwrap();
            let mut node = Node {
                child: None,
                port: client,
                http,
                config,
                log: dir.join(format!("n{}.log", i + 1)),
            };
            node.start();
            nodes.push(node);
        }
        let (lc, lh) = (free_port(), free_port());
        let config = dir.join("leaf.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: leaf1\nlisten: \"127.0.0.1:{lc}\"\nhttp: \"127.0.0.1:{lh}\"\n\
                 leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n"
            ),
        )
        .unwrap();
        let mut leaf = Node {
            child: None,
            port: lc,
            http: lh,
            config,
            log: dir.join("leaf.log"),
        };
        leaf.start();
        let c = NatsCluster { nodes, leaf };
        // Elections on a loaded two-core machine (the lab's other tests
        // beside) have taken more than 30 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let js = c.nodes.iter().all(|n| n.healthy(true));
            let linked =
                c.leaf.healthy(false) && c.leaf.log().contains("Leafnode connection created");
            if js && linked {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS cluster did not come up in 60 s:\n{}\nleaf:\n{}",
                c.nodes
                    .iter()
                    .map(|n| n.log())
                    .collect::<Vec<_>>()
                    .join("\n---\n"),
                c.leaf.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The three servers' URLs, comma-separated (a client's `--nats`).
    pub fn hub_urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One JetStream server on loopback with `extra` in its config (users and
/// their permissions), healthy when returned.
pub fn single(dir: &Path, extra: &str) -> Node {
    let (client, http) = (free_port(), free_port());
    let store = dir.join("single");
    std::fs::create_dir_all(&store).unwrap();
    let config = dir.join("single.conf");
    std::fs::write(
        &config,
        format!(
            "server_name: s1\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{http}\"\n\
             jetstream {{ store_dir: \"{}\" }}\n{extra}\n",
            store.display()
        ),
    )
    .unwrap();
    let mut node = Node {
        child: None,
        port: client,
        http,
        config,
        log: dir.join("single.log"),
    };
    node.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.healthy(true) {
        assert!(
            Instant::now() < deadline,
            "nats-server did not come up: {}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node
}

/// A TCP relay on loopback that can be cut like a network partition:
/// while cut it forwards nothing and closes nothing (no FIN, no RST), so
/// both ends see silence, their kernel buffers fill and their sends stall;
/// healed, every byte held back goes on in order, as after a real
/// partition that TCP outlived.
pub struct Partition {
    /// The port to dial instead of the target's.
    pub port: u16,
    cut: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Partition {
    /// Relay to `127.0.0.1:target`.
    pub fn to(target: u16) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)> = Default::default();
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { break };
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    let c = c.clone();
                    std::thread::spawn(move || pump(from, to, &c));
                }
            }
        });
        Partition { port, cut }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stop forwarding.
    pub fn cut(&self) {
        *self.cut.0.lock().unwrap() = true;
    }

    /// Forward again, what was held back first.
    pub fn heal(&self) {
        *self.cut.0.lock().unwrap() = false;
        self.cut.1.notify_all();
    }
}

/// Copy `from` to `to`, holding each chunk while the relay is cut.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    cut: &(std::sync::Mutex<bool>, std::sync::Condvar),
) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut g = cut.0.lock().unwrap();
        while *g {
            g = cut.1.wait(g).unwrap();
        }
        drop(g);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
