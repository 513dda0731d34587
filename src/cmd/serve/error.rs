//! The API's one error shape, `{error, details, code}`, for every failure:
//! drover's own errors, the framework's rejections and panics alike.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::model::error::{Error, Refusal};

/// An error answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// What went wrong, in a few words.
    pub error: String,
    /// What exactly, and what to do about it.
    pub details: String,
    /// The HTTP status.
    pub code: u16,
    #[serde(skip)]
    #[schema(ignore)]
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status.
    pub fn new(code: StatusCode, error: &str, details: impl Into<String>) -> Self {
        ApiError {
            error: error.to_string(),
            details: details.into(),
            code: code.as_u16(),
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid request", details)
    }

    /// 401: no key or an unknown key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a key as `Authorization: Bearer KEY`; keys come from `drover serve keygen`",
        )
    }

    /// 403: the key may not do this. Never lists what it may do.
    pub fn forbidden(details: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", details)
    }

    /// 404.
    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", details)
    }

    /// 409: another job holds what this one needs.
    pub fn conflict(details: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", details)
    }

    /// 429, with the seconds to wait.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited",
            format!("too many changes from this key; retry in {retry_after}s"),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 429 for reads: too many in flight; retry in a second.
    pub fn busy(details: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "too many reads", details);
        e.retry_after = Some(1);
        e
    }

    /// 500.
    pub fn internal(details: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", details)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let mut code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let details = match &e {
            // A refusal's own remedy is the command line's (`pass
            // --ignore-window`); an HTTP caller gets the server's.
            Error::Refused(r) => {
                if matches!(
                    r,
                    Refusal::Locked { .. }
                        | Refusal::Claimed { .. }
                        | Refusal::InputsChanged(_)
                        | Refusal::StalePlan(_)
                        | Refusal::Drift(_)
                ) {
                    // Another run holds the runbook, the job to retry or
                    // resume no longer matches its files, or a stored
                    // plan no longer matches its files or hosts: a
                    // conflict with the server's state, not a forbidden
                    // request.
                    code = StatusCode::CONFLICT;
                }
                format!("{}; {}", http_what(r), http_remedy(r))
            }
            _ => e.details(),
        };
        ApiError::new(code, &e.to_string(), details)
    }
}

/// What a refusal says over HTTP: as on the command line, but with file
/// names for paths, since the server's own paths are not the caller's.
fn http_what(r: &Refusal) -> String {
    let name = |p: &std::path::Path| {
        p.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    match r {
        Refusal::Window { playbook, window } => {
            format!("outside the window of {} ({window})", name(playbook))
        }
        Refusal::Locked {
            playbook, holder, ..
        } => format!(
            "another drover run of {} holds its lock (pid {holder})",
            name(playbook)
        ),
        Refusal::LockDir { .. } => "the server's lock directory is unusable".into(),
        _ => r.what(),
    }
}

/// What an HTTP caller can do about a refusal.
fn http_remedy(r: &Refusal) -> &'static str {
    match r {
        Refusal::Window { .. } => "an admin key may run it anyway with ?ignore_window=true",
        Refusal::Protected(_) => "only an admin key may, with ?allow_protected=true",
        Refusal::Locked { .. } | Refusal::Claimed { .. } => "wait for it to finish, then retry",
        Refusal::LockDir { .. } | Refusal::NotPrivate { .. } => {
            "the server's files need fixing: see its log"
        }
        Refusal::StalePlan(_) | Refusal::Drift(_) => "plan again and review the new plan",
        Refusal::InputsChanged(_) => {
            "send \"changed\": true to run what is left with the changed files, or start a new job"
        }
        Refusal::Server(_) => "see the other server's answer",
    }
}

/// The server's own directories (of its inventory, keys, runbooks, jobs
/// and the rest), set once at start: what they hold is named in answers
/// by its path below them, never by the server's absolute paths.
static SERVER_DIRS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Hide these directories from every error answer from now on.
pub fn hide_dirs(dirs: impl IntoIterator<Item = std::path::PathBuf>) {
    let mut v: Vec<String> = dirs
        .into_iter()
        .filter(|d| d.is_absolute() && d.parent().is_some())
        .map(|d| d.to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    // Longest first: a runbook dir inside the config dir is cut whole.
    v.sort_by_key(|d| std::cmp::Reverse(d.len()));
    v.dedup();
    let _ = SERVER_DIRS.set(v);
}

/// `text` with the server's directories cut from the paths in it.
pub fn without_server_paths(text: &str) -> String {
    let mut out = text.to_string();
    for d in SERVER_DIRS.get().into_iter().flatten() {
        out = out.replace(&format!("{d}/"), "");
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        self.details = without_server_paths(&self.details);
        self.error = without_server_paths(&self.error);
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (code, Json(&self)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// Put in a response's extensions by a handler whose 4xx/5xx body is its
/// answer, not an error (Consul's 429/503 health levels, the page's login
/// form): [`json_errors`] leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub struct KeepBody;

/// Turn what the framework and tower layers answer on their own (405, 408,
/// 413, a rejected extractor) into the API's error shape.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() && !status.is_server_error()
        || is_json
        || r.extensions().get::<KeepBody>().is_some()
    {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = status.canonical_reason().unwrap_or("error").to_lowercase();
    let details = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the body is over 1 MiB".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
        _ if text.is_empty() => error.clone(),
        _ => text,
    };
    let mut out = ApiError::new(status, &error, details).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// 414 for a path and query over `MAX` bytes, in the error shape (hyper's
/// own 414, past 64 KiB, has no body and comes before any of this).
pub async fn uri_limit<const MAX: usize>(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri too long",
            format!(
                "the path and query are {len} bytes, over {} KiB",
                MAX / 1024
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// The answer to a panic in a handler: a 500 in the error shape (the
/// connection stays up), with nothing of the panic's text, which may hold
/// anything.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal("drover hit a bug answering this request; it is logged").into_response()
}
