//! A headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol, for the status page's tests: navigate, evaluate, wait for
//! the DOM, resize to a phone, take screenshots (target/page-*.png).

use crate::server;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A headless Chromium with its own profile; killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

impl Browser {
    pub fn start(bin: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // A full-page screenshot lays the page out again without
                // the scrollbar: hidden, the page is laid out at the
                // viewport's width in both.
                "--hide-scrollbars",
                "--window-size=1000,1400",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
        let err = child.stderr.take().unwrap();
        let mut lines = BufReader::new(err).lines();
        let browser_ws = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("DevTools listening on ") {
                        break u.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("chromium exited before its DevTools endpoint was up");
                }
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let port = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let list: Value = {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                server::client()
                    .get(format!("http://127.0.0.1:{port}/json/list"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            })
        };
        let page_ws = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {list}"))
            .to_string();
        let (ws, _) = tungstenite::connect(page_ws.as_str()).expect("connect to the page");
        Browser {
            child,
            _profile: profile,
            ws,
            next_id: 1,
        }
    }

    /// Send a DevTools command and wait for its answer (events in between
    /// are skipped).
    pub fn cmd(&mut self, method: &str, params: Value) -> Value {
        match self.try_cmd(method, params) {
            Ok(v) => v,
            Err(v) => panic!("{method}: {v}"),
        }
    }

    /// [`Browser::cmd`], its error answer returned.
    fn try_cmd(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().expect("read from chromium");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                return match v.get("error") {
                    None => Ok(v["result"].clone()),
                    Some(_) => Err(v),
                };
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.cmd(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Poll the DOM until `expr` is true (a minute at most).
    pub fn until(&mut self, what: &str, expr: &str) {
        let t0 = Instant::now();
        loop {
            // A look that the page's navigation (a form sent, a reload)
            // cut short is no answer: look again on the new page.
            let r = self.try_cmd(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            );
            match r {
                Ok(v) if v["result"]["value"] == json!(true) => return,
                Ok(_) => {}
                Err(e) if e.to_string().contains("navigated or closed") => {}
                Err(e) => panic!("Runtime.evaluate: {e}"),
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the page never showed {what}; it holds: {}",
                self.eval("document.body ? document.body.innerText : ''")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn screenshot(&mut self, name: &str) {
        let r = self.cmd(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("page-{name}.png")), png).unwrap();
    }

    /// Lay the page out at `width`×`height` CSS pixels (`mobile`: as a
    /// phone, with its viewport meta honoured).
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.cmd(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }
}
