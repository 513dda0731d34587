//! `drover apply --server URL`: a run sent through a drover server instead
//! of run from here, so that it takes the server's claims (a cron run and a
//! server job exclude each other), is audited and listed there, and needs
//! the runbook's approvals. Its results come back over the job's event
//! stream and are shown, and exit, as `apply`'s.

use std::io::{IsTerminal, Write};
use std::path::Path;

use serde_json::Value;

use crate::engine::saved::SavedPlan;
use crate::model::error::{Error, Refusal, Result};
use crate::model::report::{JobReport, JobResult, Verdict};
use crate::render::apply::{job_header, result_line, summary};
use crate::render::escape::one_line;

use super::args::{ApplyArgs, ReportFormat};

/// The environment variable a key is read from without `--key-file`.
const KEY_ENV: &str = "DROVER_KEY";

/// Run `a` on the server at `url`.
pub(super) fn apply(a: &ApplyArgs, url: &str) -> Result<i32> {
    let base = url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::Usage(format!(
            "--server `{base}`: give http(s)://HOST:PORT"
        )));
    }
    if a.allow_protected {
        return Err(Error::Usage(
            "--allow-protected is not sent to a server: an admin key asks for it with ?allow_protected=true".into(),
        ));
    }
    let key = key(a.key_file.as_deref())?;
    let params: serde_json::Map<String, Value> = a.params.values()?.request_values();
    let client = reqwest::Client::builder()
        .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        // A redirect would carry the key to a URL no one gave.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
    let server = Server {
        base: base.to_string(),
        key,
        client,
    };
    super::runtime()?.block_on(async {
        let started = match (&a.plan, &a.playbook) {
            (Some(plan), _) => server.send_plan(plan, a, params).await?,
            (None, Some(pb)) => server.run_runbook(pb, a, params).await?,
            (None, None) => {
                return Err(Error::Usage(
                    "apply --server needs PLAYBOOK or --plan FILE".into(),
                ))
            }
        };
        server.follow(started, a.format).await
    })
}

/// The key: `--key-file`'s first line, or `$DROVER_KEY`. Never shown.
fn key(file: Option<&Path>) -> Result<String> {
    let raw = match file {
        Some(f) => crate::model::yaml::read_bounded(f, "key file")?,
        None => std::env::var(KEY_ENV).map_err(|_| {
            Error::Usage(format!(
                "apply --server needs a key: --key-file FILE, or the {KEY_ENV} environment variable"
            ))
        })?,
    };
    let k = raw.lines().next().unwrap_or_default().trim().to_string();
    if k.is_empty() {
        return Err(Error::Usage(match file {
            Some(f) => format!("--key-file {}: the file is empty", f.display()),
            None => format!("{KEY_ENV} is empty"),
        }));
    }
    Ok(k)
}

struct Server {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send one request; the answer's status and JSON body. A transport
    /// error names the server, never the key.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let resp = req.bearer_auth(&self.key).send().await.map_err(|e| {
            Error::Usage(format!(
                "cannot reach the server {}: {}",
                self.base,
                e.without_url()
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| {
            Error::Usage(format!(
                "the server {} broke off: {}",
                self.base,
                e.without_url()
            ))
        })?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The answer as an error, with apply's exit code for its kind: a
    /// request the server could not take is invalid input (1); one it
    /// refused (403, 409, 410) is a refusal (3).
    fn refused(&self, status: u16, body: &Value) -> Error {
        let what = body["details"]
            .as_str()
            .or(body["error"].as_str())
            .map_or_else(|| body.to_string(), str::to_string);
        let text = format!("the server answered {status}: {}", one_line(&what));
        match status {
            403 | 409 | 410 | 423 => Error::Refused(Refusal::Server(text)),
            _ => Error::Usage(text),
        }
    }

    /// Run the server's runbook named as `pb`, if its content is `pb`'s.
    async fn run_runbook(
        &self,
        pb: &Path,
        a: &ApplyArgs,
        params: serde_json::Map<String, Value>,
    ) -> Result<Value> {
        let name = pb
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| Error::Usage(format!("{}: not a playbook file name", pb.display())))?;
        let local =
            crate::model::digest(crate::model::yaml::read_bounded(pb, "playbook")?.as_bytes());
        let (status, books) = self.send(self.client.get(self.url("/runbook"))).await?;
        if status != 200 {
            return Err(self.refused(status, &books));
        }
        let book = books
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "the server {} has no runbook `{name}` (GET /runbook lists them)",
                    self.base
                ))
            })?;
        let theirs = book["digest"].as_str().unwrap_or_default();
        if theirs != local {
            return Err(Error::Usage(format!(
                "{} differs from the server's runbook `{name}` (here sha256 {}, there sha256 {}): the server runs its own copy; update one of them first",
                pb.display(),
                local.get(..12).unwrap_or(&local),
                theirs.get(..12).unwrap_or(theirs)
            )));
        }
        let mut body = serde_json::json!({ "params": params });
        if let Some(l) = &a.limit {
            body["limit"] = Value::from(l.as_str());
        }
        let mut url = format!("/runbook/{name}?wait=0s");
        if a.ignore_window {
            url.push_str("&ignore_window=true");
        }
        self.started(json(self.client.post(self.url(&url)), &body))
            .await
    }

    /// Upload a saved plan, then apply the server's copy of it.
    async fn send_plan(
        &self,
        plan: &Path,
        a: &ApplyArgs,
        params: serde_json::Map<String, Value>,
    ) -> Result<Value> {
        if a.limit.is_some() {
            return Err(Error::Usage(
                "--limit with --plan: the plan's own limit is applied".into(),
            ));
        }
        let text = crate::model::yaml::read_bounded(plan, "saved plan")?;
        // Checked here first: a file that is no plan is not sent.
        SavedPlan::parse(&text, &plan.display().to_string())?;
        let req = self
            .client
            .post(self.url("/plan"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(text);
        let (status, made) = self.send(req).await?;
        if status != 201 {
            return Err(self.refused(status, &made));
        }
        let digest = made["digest"].as_str().unwrap_or_default().to_string();
        eprintln!(
            "drover: the server stored the plan as {}",
            one_line(&self.url(&format!("/plan/{digest}")))
        );
        let mut url = format!("/plan/{digest}/apply?wait=0s");
        if a.ignore_window {
            url.push_str("&ignore_window=true");
        }
        let body = serde_json::json!({ "params": params });
        self.started(json(self.client.post(self.url(&url)), &body))
            .await
    }

    /// The job a start answered: 202 (running) or 200 (already ended).
    async fn started(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let (status, job) = self.send(req).await?;
        match status {
            200 | 202 => Ok(job),
            _ => Err(self.refused(status, &job)),
        }
    }

    /// Show the job's results as they happen, then its summary; apply's
    /// exit code.
    async fn follow(&self, job: Value, format: ReportFormat) -> Result<i32> {
        let id = job["job_id"].as_str().unwrap_or_default().to_string();
        let text = format == ReportFormat::Text;
        let color = text && std::io::stdout().is_terminal();
        if text {
            outln!(
                "{}",
                job_header(&id, job["playbook"].as_str().unwrap_or_default())
            );
        }
        if job["outcome"] == "running" {
            self.stream(&id, |r| {
                if text {
                    outln!("{}", result_line(r, color));
                }
            })
            .await?;
        } else if text {
            for r in results(&job) {
                outln!("{}", result_line(&r, color));
            }
        }
        let (status, view) = self
            .send(self.client.get(self.url(&format!("/job/{id}"))))
            .await?;
        if status != 200 {
            return Err(self.refused(status, &view));
        }
        let report: JobReport = serde_json::from_value(view).map_err(|e| {
            Error::Internal(format!("the server's report of job {id} is not one: {e}"))
        })?;
        match format {
            ReportFormat::Json => {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| Error::Internal(format!("cannot serialise the report: {e}")))?;
                outln!("{text}");
            }
            ReportFormat::Text => out!("{}", summary(&report, None, None)),
        }
        let _ = std::io::stdout().flush();
        Ok(Verdict::of_report(&report).exit_code())
    }

    /// Read `GET /job/{id}/events` to its `done`, calling `each` per
    /// result.
    async fn stream(&self, id: &str, mut each: impl FnMut(&JobResult)) -> Result<()> {
        let req = self.client.get(self.url(&format!("/job/{id}/events")));
        let mut resp =
            req.bearer_auth(&self.key).send().await.map_err(|e| {
                Error::Usage(format!("cannot follow job {id}: {}", e.without_url()))
            })?;
        if resp.status().as_u16() != 200 {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or_default();
            return Err(self.refused(status, &body));
        }
        let mut events = Events::default();
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                Error::Usage(format!(
                    "the server broke off job {id}'s events: {}; GET /job/{id} shows it",
                    e.without_url()
                ))
            })?;
            let Some(bytes) = chunk else {
                return Err(Error::Usage(format!(
                    "the server ended job {id}'s events before it ended (it may be stopping); GET /job/{id} shows it"
                )));
            };
            for (event, data) in events.push(&bytes) {
                match event.as_str() {
                    "result" => {
                        if let Ok(r) = serde_json::from_str::<JobResult>(&data) {
                            each(&r);
                        }
                    }
                    "done" => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

/// A request with a JSON body.
fn json(req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    req.header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

fn results(job: &Value) -> Vec<JobResult> {
    serde_json::from_value(job["results"].clone()).unwrap_or_default()
}

/// Server-sent events cut from a byte stream: (event, data) pairs.
#[derive(Default)]
struct Events {
    buf: String,
}

impl Events {
    fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let (mut event, mut data) = (String::from("message"), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            out.push((event, data));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunks() {
        let mut e = Events::default();
        assert!(e.push(b"event: result\ndata: {\"a\"").is_empty());
        let got = e.push(b":1}\n\n: keep-alive\n\nevent: done\ndata: {}\n\n");
        assert_eq!(got[0], ("result".into(), "{\"a\":1}".into()));
        assert_eq!(got[2], ("done".into(), "{}".into()));
    }
}
