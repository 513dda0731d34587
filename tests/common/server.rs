//! A real `drover serve` on a free loopback port, its keys made by
//! `drover serve keygen`, and an HTTP client, as the server's users have.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Keys of every role (and one limited to some hosts).
pub struct Keys {
    /// The keys file.
    pub file: PathBuf,
    /// admin.
    pub admin: String,
    /// operate, every host.
    pub operate: String,
    /// read.
    pub read: String,
    /// operate, only the hosts of `limited_to`.
    pub limited: String,
    /// The limited key's selector.
    pub limited_to: String,
}

fn keygen(name: &str, role: &str, targets: Option<&str>) -> (String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    c.args(["serve", "keygen", "--name", name, "--role", role]);
    if let Some(t) = targets {
        c.args(["--targets", t]);
    }
    let out = c.output().expect("run keygen");
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("keygen prints the key")
        .to_string();
    let entry: String = text
        .split_once("entry:\n")
        .expect("keygen prints the entry")
        .1
        .to_string();
    (key, entry)
}

impl Keys {
    /// Make four keys into `dir/keys.yml`; the limited one may act on
    /// `limited_to` only.
    pub fn make(dir: &Path, limited_to: &str) -> Keys {
        let (admin, a) = keygen("root-admin", "admin", None);
        let (operate, o) = keygen("oncall", "operate", None);
        let (read, r) = keygen("ci-preview", "read", None);
        let (limited, l) = keygen("web-team", "operate", Some(limited_to));
        let file = dir.join("keys.yml");
        std::fs::write(&file, format!("keys:\n{a}{o}{r}{l}")).unwrap();
        Keys {
            file,
            admin,
            operate,
            read,
            limited,
            limited_to: limited_to.into(),
        }
    }
}

/// A running server; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub base: String,
    /// What it was started with (to restart it).
    pub args: Vec<String>,
    /// Its stderr (log and, without --audit, the audit lines).
    pub stderr: PathBuf,
}

impl Server {
    /// Start `drover serve ARGS --listen 127.0.0.1:0` and wait for its
    /// "listening on" line.
    pub fn start(args: &[&str], stderr: &Path) -> Server {
        Self::start_scheme("http", args, stderr)
    }

    /// As [`Server::start`], naming the URL scheme (https with TLS flags).
    pub fn start_scheme(scheme: &str, args: &[&str], stderr: &Path) -> Server {
        Self::start_prepared(scheme, args, stderr, |_| {})
    }

    /// As [`Server::start`], under the process umask `umask`.
    pub fn start_umask(args: &[&str], stderr: &Path, umask: u32) -> Server {
        Self::start_prepared("http", args, stderr, |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches no memory.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(umask as libc::mode_t);
                    Ok(())
                });
            }
        })
    }

    /// As [`Server::start_scheme`], with `prepare` adjusting the command
    /// (its environment, limits) before it is spawned.
    pub fn start_prepared(
        scheme: &str,
        args: &[&str],
        stderr: &Path,
        prepare: impl FnOnce(&mut Command),
    ) -> Server {
        let mut all: Vec<String> = vec!["serve".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        if !args.contains(&"--listen") {
            all.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
        cmd.args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap());
        prepare(&mut cmd);
        let mut child = cmd.spawn().expect("start drover serve");
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("drover serve: listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the server did not start: {line:?}; stderr: {}",
                    std::fs::read_to_string(stderr).unwrap_or_default()
                )
            })
            .to_string();
        Server {
            child,
            base: format!("{scheme}://{addr}"),
            args: all,
            stderr: stderr.to_path_buf(),
        }
    }

    /// The URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a signal to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, then wait for the exit code.
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.child
            .wait()
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1)
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never follows redirects (a 202's Location is read,
/// not followed).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Send a request with a bearer key; returns (status, headers, body as JSON
/// or as a JSON string of the text).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut r = client().request(method, url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, body)
}

/// Assert the error shape of DESIGN.md: `{error, details, code}`, code =
/// the status.
pub fn assert_error(status: u16, body: &serde_json::Value) {
    assert_eq!(body["code"].as_u64(), Some(status as u64), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["details"].is_string(), "{body}");
}

/// Log in on the status page with `key`; the `name=value` of its session
/// cookie.
pub async fn login(client: &reqwest::Client, login_url: &str, key: &str) -> String {
    let r = client
        .post(login_url)
        .form(&[("key", key)])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(r.status().as_u16(), 303, "login");
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// Poll `GET url` with `cookie` until it answers `want`, for at most
/// `within`; the last status.
pub async fn poll_status(url: &str, cookie: &str, want: u16, within: std::time::Duration) -> u16 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let st = client()
            .get(url)
            .header("cookie", cookie)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16();
        if st == want || std::time::Instant::now() >= deadline {
            return st;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A host that never answers: a unix socket standing in for its D-Bus
/// (`transport: local`, `bus: unix:path=…`) that accepts connections and
/// says nothing, so a read or a job of the host waits until the test lets
/// it go. How a test holds work in flight without sleeping.
pub struct StuckBus {
    path: PathBuf,
    state: std::sync::Arc<(std::sync::Mutex<StuckState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct StuckState {
    held: Vec<std::os::unix::net::UnixStream>,
    accepted: usize,
    released: bool,
}

impl StuckBus {
    /// Listen on `dir/stuck-bus.sock`.
    pub fn new(dir: &Path) -> StuckBus {
        let path = dir.join("stuck-bus.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let state: std::sync::Arc<(std::sync::Mutex<StuckState>, std::sync::Condvar)> =
            Default::default();
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (m, cv) = &*s;
                let mut st = m.lock().unwrap();
                st.accepted += 1;
                if !st.released {
                    st.held.push(conn);
                }
                cv.notify_all();
            }
        });
        StuckBus { path, state }
    }

    /// The inventory's `bus:` for the stuck host.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.path.display())
    }

    /// Wait until `n` connections in all have reached the host.
    pub fn wait_connections(&self, n: usize) {
        let (m, cv) = &*self.state;
        let st = m.lock().unwrap();
        let (st, t) = cv
            .wait_timeout_while(st, std::time::Duration::from_secs(120), |s| s.accepted < n)
            .unwrap();
        assert!(
            !t.timed_out(),
            "only {} of {n} connections came",
            st.accepted
        );
    }

    /// Connections so far.
    pub fn accepted(&self) -> usize {
        self.state.0.lock().unwrap().accepted
    }

    /// Hang up on every connection, now and later: what waited fails.
    pub fn release(&self) {
        let mut st = self.state.0.lock().unwrap();
        st.released = true;
        st.held.clear();
    }
}

impl Drop for StuckBus {
    fn drop(&mut self) {
        self.release();
    }
}
