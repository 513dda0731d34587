//! `--notify URL` (apply and serve): the job report POSTed to the
//! operator's receivers when a job ends.
//!
//! The body is the report as `--report` writes it. It is signed with
//! HMAC-SHA256 over `TIMESTAMP.BODY` under a secret read from a file or the
//! environment, never from the command line (where `ps` shows it), so a
//! receiver can check who sent it and refuse replays outside a window.
//! `job_id` plus the event is the idempotency key: the same job's
//! notification may come twice (a retry whose answer was lost). Failed
//! attempts are retried with backoff for a bounded time; the job's outcome
//! and exit code never depend on a delivery. A receiver's URL may hold a
//! credential (userinfo, a token in its path or query): logs and errors
//! name it as scheme, host and port only.
//!
//! Posting lives here, in the command layer, not in the engine: it is the
//! commands' way of telling the outside world, as printing is, and it needs
//! an HTTP client the engine has no other use for.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::error::{Error, Result};
use crate::model::report::JobReport;

/// The environment variable holding the secret when no file is given.
pub const SECRET_ENV: &str = "DROVER_NOTIFY_SECRET";

/// The event a notification reports (header `X-Drover-Event`).
pub const JOB_FINISHED: &str = "job.finished";

/// One attempt's time bound.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait before a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A secret shorter than this is refused: it could be guessed.
const MIN_SECRET: usize = 16;

/// `--notify` and its secret.
#[derive(Debug, Args, Clone)]
pub struct NotifyArgs {
    /// When a job ends, POST its report (JSON) to URL, signed with
    /// HMAC-SHA256 (header X-Drover-Signature); repeatable. Failed
    /// deliveries are retried for --notify-timeout; they never change the
    /// job's outcome.
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// Read the notifications' signing secret from FILE (not readable by
    /// others); without it, from $DROVER_NOTIFY_SECRET. Never an argument.
    #[arg(long, value_name = "FILE")]
    pub notify_secret_file: Option<PathBuf>,
    /// Give up on a receiver that has not taken a notification after
    /// retrying this long.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::model::parse_duration)]
    pub notify_timeout: Duration,
}

/// A receiver: its URL, and how logs name it.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    /// `scheme://host:port/…`: no userinfo, path or query.
    shown: String,
}

impl Target {
    fn parse(raw: &str) -> Result<Target> {
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| {
            Error::Usage(format!(
                "--notify `{}`: not a URL ({e}); write e.g. https://hooks.example.com/drover",
                shown_raw(raw)
            ))
        })?;
        let shown = shown(&url);
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::Usage(format!(
                "--notify `{shown}`: give an http:// or https:// URL with a host"
            )));
        }
        Ok(Target { url, shown })
    }

    /// `text` without anything of the URL that may be a credential.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(self.url.as_str(), &self.shown);
        let secretish = [
            self.url.password().unwrap_or_default(),
            self.url.username(),
            self.url.query().unwrap_or_default(),
            self.url.path(),
        ];
        for s in secretish {
            if s.len() > 1 {
                out = out.replace(s, "…");
            }
        }
        out
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// How a URL is named in logs and errors.
fn shown(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path().len() > 1 || url.query().is_some() {
        "/…"
    } else {
        ""
    };
    format!("{}://{host}{port}{rest}", url.scheme())
}

/// A URL that did not parse, named without what may be a credential.
fn shown_raw(raw: &str) -> String {
    let raw = raw.trim();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    let tail = if rest.len() > host.len() { "…" } else { "" };
    if scheme.is_empty() {
        format!("{host}{tail}")
    } else {
        format!("{scheme}://{host}{tail}")
    }
}

/// The signing secret; never shown.
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn read_secret(file: Option<&Path>) -> Result<Secret> {
    let (text, from) = match file {
        Some(path) => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?;
            if meta.mode() & 0o004 != 0 {
                return Err(Error::Usage(format!(
                    "--notify-secret-file {}: every user may read it; chmod o-r it (0600 or 0640)",
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
            (text, format!("--notify-secret-file {}", path.display()))
        }
        None => match std::env::var(SECRET_ENV) {
            Ok(v) => (v, format!("${SECRET_ENV}")),
            Err(_) => {
                return Err(Error::Usage(format!(
                    "--notify needs a signing secret: --notify-secret-file FILE or ${SECRET_ENV} (e.g. `openssl rand -hex 32`)"
                )))
            }
        },
    };
    let secret = text.trim_end_matches(['\n', '\r']).as_bytes().to_vec();
    if secret.len() < MIN_SECRET {
        return Err(Error::Usage(format!(
            "{from}: the notification secret must be at least {MIN_SECRET} bytes (e.g. `openssl rand -hex 32`)"
        )));
    }
    Ok(Secret(secret))
}

/// `v1=HEX`: HMAC-SHA256 of `TIMESTAMP.BODY` under the secret.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How one delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A receiver answered 2xx.
    Delivered,
    /// Not taken within the time bound, or refused (4xx).
    Failed,
}

/// Called with each delivery's result (the server counts them).
type OnResult = Box<dyn Fn(Delivery) + Send + Sync>;

/// Sends notifications to every `--notify` receiver.
pub struct Notifier {
    targets: Vec<Target>,
    secret: Secret,
    client: reqwest::Client,
    budget: Duration,
    on_result: Option<OnResult>,
    /// Deliveries the server started and has not seen end.
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// The notifier `--notify` asks for (None without it), checked before
    /// any job starts: URLs, the secret.
    pub fn from_args(a: &NotifyArgs) -> Result<Option<Notifier>> {
        if a.notify.is_empty() {
            if a.notify_secret_file.is_some() {
                return Err(Error::Usage(
                    "--notify-secret-file without --notify: give the receiver's URL".into(),
                ));
            }
            return Ok(None);
        }
        let targets = a
            .notify
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>>>()?;
        let secret = read_secret(a.notify_secret_file.as_deref())?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(ATTEMPT_TIMEOUT)
            // A redirect would carry the signed body to a URL no one gave.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Some(Notifier {
            targets,
            secret,
            client,
            budget: a.notify_timeout,
            on_result: None,
            pending: Mutex::new(Vec::new()),
        }))
    }

    /// Also call `f` with each delivery's result.
    pub fn on_result(mut self, f: impl Fn(Delivery) + Send + Sync + 'static) -> Notifier {
        self.on_result = Some(Box::new(f));
        self
    }

    /// POST `report` to every receiver, retrying each for the time bound;
    /// returns when all are delivered or given up on.
    pub async fn deliver(&self, report: &JobReport) -> Vec<Delivery> {
        let body = match serde_json::to_vec(report) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(job_id = %report.job_id, "cannot serialise the report for --notify: {e}");
                return vec![Delivery::Failed; self.targets.len()];
            }
        };
        let sends = self
            .targets
            .iter()
            .map(|t| self.deliver_to(t, &report.job_id, &body));
        futures_util::future::join_all(sends).await
    }

    /// Deliver in the background (the server): [`Notifier::drain`] waits.
    pub fn spawn(self: &Arc<Self>, report: JobReport) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            me.deliver(&report).await;
        });
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|t| !t.is_finished());
        p.push(task);
    }

    /// Wait up to `within` for the background deliveries; those still
    /// retrying then are given up on, and logged.
    pub async fn drain(&self, within: Duration) {
        let tasks: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let left = tasks.iter().filter(|t| !t.is_finished()).count();
        if left == 0 {
            return;
        }
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(within, futures_util::future::join_all(tasks))
            .await
            .is_err()
        {
            let gone = aborts.iter().filter(|a| !a.is_finished()).count();
            aborts.iter().for_each(|a| a.abort());
            tracing::warn!(
                notifications = gone,
                "stopping: gave up on notifications still being retried"
            );
        }
    }

    async fn deliver_to(&self, t: &Target, job_id: &str, body: &[u8]) -> Delivery {
        let t0 = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let wait = match self.attempt(t, job_id, body, attempt).await {
                Ok(()) => break Ok(()),
                Err(Attempt::Final(why)) => break Err(why),
                Err(Attempt::Retry(why, after)) => {
                    let wait = after.unwrap_or(backoff).clamp(backoff, MAX_BACKOFF);
                    if t0.elapsed() + wait > self.budget {
                        break Err(format!(
                            "{why}; gave up after {}",
                            humantime::format_duration(round(t0.elapsed()))
                        ));
                    }
                    tracing::info!(job_id = %job_id, url = %t.shown, attempt, "notification not taken ({why}); retrying in {}", humantime::format_duration(wait));
                    wait
                }
            };
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        let delivery = match result {
            Ok(()) => {
                tracing::info!(job_id = %job_id, url = %t.shown, attempts = attempt, "notification delivered");
                Delivery::Delivered
            }
            Err(why) => {
                tracing::warn!(job_id = %job_id, url = %t.shown, attempts = attempt, "notification not delivered: {}", t.scrub(&why));
                Delivery::Failed
            }
        };
        if let Some(f) = &self.on_result {
            f(delivery);
        }
        delivery
    }

    async fn attempt(
        &self,
        t: &Target,
        job_id: &str,
        body: &[u8],
        attempt: u32,
    ) -> std::result::Result<(), Attempt> {
        let timestamp = chrono::Utc::now().timestamp().max(0) as u64;
        let sent = self
            .client
            .post(t.url.clone())
            .timeout(ATTEMPT_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Drover-Event", JOB_FINISHED)
            .header("X-Drover-Job-Id", job_id)
            .header("Idempotency-Key", format!("{job_id}:{JOB_FINISHED}"))
            .header("X-Drover-Timestamp", timestamp.to_string())
            .header(
                "X-Drover-Signature",
                signature(&self.secret.0, timestamp, body),
            )
            .header("X-Drover-Attempt", attempt.to_string())
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(Attempt::Retry(t.scrub(&error_text(e)), None)),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let why = format!("the receiver answered {status}");
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            Err(Attempt::Retry(why, retry_after))
        } else {
            Err(Attempt::Final(format!("{why}; not retried")))
        }
    }
}

enum Attempt {
    Retry(String, Option<Duration>),
    Final(String),
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// An error with its causes, without the URL reqwest puts in it.
fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        let t = Target::parse(
            "https://bot:hunter2@hooks.example.com:8443/services/T0/SECRETPATH?token=abc",
        )
        .unwrap();
        assert_eq!(t.shown, "https://hooks.example.com:8443/…");
        let scrubbed = t.scrub(
            "error sending request for url (https://bot:hunter2@hooks.example.com:8443/services/T0/SECRETPATH?token=abc): hunter2 /services/T0/SECRETPATH token=abc",
        );
        for secret in ["hunter2", "SECRETPATH", "token=abc", "bot:"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert_eq!(
            shown_raw("https://u:p@x.example:9/a b"),
            "https://x.example:9…"
        );
        let e = Target::parse("ftp://u:p@x.example/secret").unwrap_err();
        assert!(!format!("{e}{}", e.details()).contains("secret"));
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently, with
        // `printf '1700000000.{}' | openssl dgst -sha256 -hmac key`.
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
