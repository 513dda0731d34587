//! Health checks that reach out: HTTP and TCP from the controller, a
//! command on the host. Their levels follow the model's rules
//! ([`crate::model::health`]).

use std::time::Duration;

use crate::model::health::{command_health, http_health, CheckResult, Health, HostChecks};
use crate::model::unit::UnitName;
use crate::remote::carrier::Session;

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// GET an http:// URL with a minimal HTTP/1.0 client; the status code.
pub async fn http_status(url: &str) -> std::result::Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: drover\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "no HTTP status line".to_string())
}

/// A gate's TCP probe: the address accepts a connection.
pub async fn tcp_ok(addr: &str) -> std::result::Result<(), String> {
    tokio::net::TcpStream::connect(addr)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A gate's HTTP probe: the URL answers 2xx.
pub async fn http_ok(url: &str) -> std::result::Result<(), String> {
    match http_status(url).await? {
        c if (200..300).contains(&c) => Ok(()),
        c => Err(format!("HTTP status {c}")),
    }
}

/// Run every check of one host; the unit's own state comes first.
pub async fn check_host(
    session: Option<&Session>,
    unit_state: (Health, String),
    unit: &UnitName,
    checks: &HostChecks,
) -> Vec<CheckResult> {
    let mut out = vec![CheckResult {
        check: "unit".into(),
        target: unit.to_string(),
        status: unit_state.0,
        note: unit_state.1,
    }];
    for url in &checks.http {
        let (status, note) = match tokio::time::timeout(CHECK_TIMEOUT, http_status(url)).await {
            Ok(Ok(code)) => (http_health(code), format!("HTTP {code}")),
            Ok(Err(e)) => (Health::Critical, e),
            Err(_) => (Health::Critical, "timed out".into()),
        };
        out.push(CheckResult {
            check: "http".into(),
            target: url.clone(),
            status,
            note,
        });
    }
    for addr in &checks.tcp {
        let (status, note) = match tokio::time::timeout(CHECK_TIMEOUT, tcp_ok(addr)).await {
            Ok(Ok(())) => (Health::Passing, "connected".into()),
            Ok(Err(e)) => (Health::Critical, e),
            Err(_) => (Health::Critical, "timed out".into()),
        };
        out.push(CheckResult {
            check: "tcp".into(),
            target: addr.clone(),
            status,
            note,
        });
    }
    for cmd in &checks.command {
        let (status, note) = match session {
            None => (Health::Unknown, "no session to run the command".into()),
            Some(s) => match tokio::time::timeout(CHECK_TIMEOUT, s.run("sh", &["-c", cmd])).await {
                Ok(Ok(o)) => {
                    let mut text = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    if text.is_empty() {
                        text = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    }
                    text.truncate(200);
                    let code = o.status.code();
                    (
                        command_health(code),
                        format!(
                            "exit {}{}",
                            code.map_or("signal".to_string(), |c| c.to_string()),
                            if text.is_empty() {
                                String::new()
                            } else {
                                format!(": {text}")
                            }
                        ),
                    )
                }
                Ok(Err(e)) => (Health::Unknown, e.to_string()),
                Err(_) => (Health::Critical, "timed out".into()),
            },
        };
        out.push(CheckResult {
            check: "command".into(),
            target: cmd.clone(),
            status,
            note,
        });
    }
    out
}
