//! `drover serve` holding against its own clients: the key is checked
//! before any limit, every limit answers in the error shape, a client that
//! does not finish its headers loses its connection, and idle connections
//! past the cap (or past the descriptor limit) leave room for a request.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;

use crate::serve::{start, start_prepared};
use crate::server::{assert_error, call, client};

/// Far past any header timeout a test sets: only reached when the server
/// never closes.
const BOUND: Duration = Duration::from_secs(60);

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Read until the server closes the connection (end of file or a reset);
/// what it sent, or None when it was still open after [`BOUND`].
fn read_until_closed(c: &mut TcpStream) -> Option<Vec<u8>> {
    c.set_read_timeout(Some(BOUND)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether the server still holds the connection open, without waiting.
fn still_open(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let open = matches!(c.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
    c.set_nonblocking(false).unwrap();
    open
}

/// Idle connections: half of them silent, half with a request's headers
/// begun and never finished.
fn idle_connections(base: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut c = TcpStream::connect(addr(base)).unwrap();
            if i % 2 == 1 {
                c.write_all(b"GET /job HTTP/1.1\r\nHost: x\r\n").unwrap();
            }
            c
        })
        .collect()
}

#[tokio::test]
async fn the_key_comes_before_the_limits_and_every_limit_answers_in_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(dir.path(), &["--rate-limit", "0"]);
    let two_mib = vec![b'a'; 2 * 1024 * 1024];
    let url = s.url("/runbook/restart-web");
    for key in [None, Some(keys.operate.as_str())] {
        // With a length, and streamed in chunks without one.
        for chunked in [false, true] {
            let mut r = client()
                .post(&url)
                .header("content-type", "application/json");
            r = if chunked {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    two_mib.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
                r.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                )))
            } else {
                r.body(two_mib.clone())
            };
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            let resp = r.send().await.unwrap();
            let st = resp.status().as_u16();
            let b: serde_json::Value = resp.json().await.unwrap();
            let want = if key.is_some() { 413 } else { 401 };
            assert_eq!(st, want, "key: {}, chunked: {chunked}: {b}", key.is_some());
            assert_error(st, &b);
        }
    }
    // A long URI: its path or its query.
    let long = "a".repeat(20 * 1024);
    for path in [
        format!("/node/{long}/service"),
        format!("/job?status={long}"),
    ] {
        let (st, _, b) = call(Method::GET, &s.url(&path), None).await;
        assert_eq!(st, 401, "{b}");
        let (st, _, b) = call(Method::GET, &s.url(&path), Some(&keys.read)).await;
        assert_eq!(st, 414, "{b}");
        assert_error(st, &b);
        assert!(b["details"].as_str().unwrap().contains("8 KiB"), "{b}");
    }
    // Under the limits, the same key is answered as ever.
    let (st, _, b) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_loses_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _keys) = start(dir.path(), &["--header-timeout", "1s"]);
    // Silent.
    let mut silent = TcpStream::connect(addr(&s.base)).unwrap();
    // Headers begun, never ended.
    let mut half = TcpStream::connect(addr(&s.base)).unwrap();
    half.write_all(b"POST /job/x/cancel HTTP/1.1\r\nHost: x\r\nAuthori")
        .unwrap();
    // Answered, then kept alive and silent.
    let mut kept = TcpStream::connect(addr(&s.base)).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let silent_got = read_until_closed(&mut silent).expect("a silent connection stays open");
    assert!(silent_got.is_empty(), "{silent_got:?}");
    let half_got = read_until_closed(&mut half).expect("a half-sent request stays open");
    assert!(
        !String::from_utf8_lossy(&half_got).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&half_got)
    );
    let kept_got = read_until_closed(&mut kept).expect("a kept-alive connection stays open");
    let text = String::from_utf8_lossy(&kept_got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "one answer, then closed: {text}"
    );
    // The server goes on.
    assert_eq!(call(Method::GET, &s.url("/health"), None).await.0, 200);
}

/// With a header timeout far past the test's bound, only the cap can make
/// room: the oldest idle connections are closed, the newest stay, and a
/// request with a key is answered.
#[tokio::test]
async fn idle_connections_past_the_cap_leave_room_for_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start(
        dir.path(),
        &["--max-connections", "8", "--header-timeout", "10m"],
    );
    let mut idle = idle_connections(&s.base, 40);
    let (st, _, b) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    // 40 + the request's connection past a cap of 8: the oldest 33 made
    // room, in the order they came.
    for (i, c) in idle.iter_mut().enumerate().skip(33) {
        assert!(still_open(c), "connection {i} of the newest 7 was closed");
    }
    for (i, c) in idle.iter_mut().enumerate().take(33) {
        assert!(
            read_until_closed(c).is_some(),
            "connection {i} of the oldest 33 is still open"
        );
    }
}

/// The server's descriptors bounded to 256 (its soft limit cannot be
/// raised past that hard one): the default cap (a quarter) keeps 300 idle
/// connections from exhausting them.
#[tokio::test]
async fn idle_connections_past_the_descriptor_limit_leave_room_for_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (s, keys) = start_prepared(dir.path(), &["-v"], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; it touches only the
        // child about to exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let _idle = idle_connections(&s.base, 300);
    let (st, _, b) = call(Method::GET, &s.url("/job"), Some(&keys.read)).await;
    assert_eq!(st, 200, "{b}");
    let log = s.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("max_connections=64"), "{log}");
}

/// SIGTERM with clients that never finish their headers: their
/// connections are closed at once and the server exits 0 (it used to wait
/// for them forever).
#[tokio::test]
async fn sigterm_does_not_wait_for_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _keys) = start(dir.path(), &["--header-timeout", "10m"]);
    let mut idle = idle_connections(&s.base, 4);
    // Answered once, so the server has taken every connection above.
    assert_eq!(call(Method::GET, &s.url("/health"), None).await.0, 200);
    s.signal(libc::SIGTERM);
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(
            read_until_closed(c).is_some(),
            "connection {i} still open after SIGTERM"
        );
    }
    assert_eq!(s.stop(), 0);
}
