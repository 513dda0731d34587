//! Who is asking: the key from `Authorization: Bearer` (or, for the Consul
//! routes' clients, `X-Consul-Token`), its role and the hosts it may act
//! on; and the audit line of every request a key was given for.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::model::inventory::{Host, Inventory};
use crate::model::keys::Role;
use crate::model::target::Selector;

use super::audit::AuditLine;
use super::error::ApiError;
use super::listen::Peer;
use super::session::{cookie_name, cookie_session, csrf_ok, SessionId};
use super::state::AppState;

/// The caller of a request, once its key was recognised.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The hosts it may act on; None: all.
    pub targets: Option<Selector>,
}

/// Put in a response's extensions by handlers that start or touch a job,
/// for the audit line.
#[derive(Debug, Clone)]
pub struct JobId(pub String);

impl Caller {
    /// Refuse unless the role includes `need`.
    pub fn require(&self, need: Role) -> Result<(), ApiError> {
        if self.role >= need {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this key may not {}",
                match need {
                    Role::Read => "read",
                    Role::Operate => "change services, run runbooks or cancel jobs",
                    Role::Admin => "do this (it needs an admin key)",
                }
            )))
        }
    }

    /// Whether the key may act on `h`.
    pub fn may_reach(&self, h: &Host) -> bool {
        self.targets.as_ref().is_none_or(|s| s.matches(h))
    }

    /// The inventory as this key sees it: only the hosts it may act on.
    pub fn inventory(&self, inv: &Inventory) -> Inventory {
        let mut mine = inv.clone();
        mine.hosts.retain(|h| self.may_reach(h));
        mine
    }

    /// The hosts whose jobs this key may see, cancel and follow: None for
    /// an admin or a key without `targets` (every job), else the hosts of
    /// `inv` inside its targets. A job touching any other host is, for
    /// this key, a job that does not exist.
    pub fn job_scope(&self, inv: &Inventory) -> Option<std::collections::BTreeSet<String>> {
        if self.role == Role::Admin || self.targets.is_none() {
            return None;
        }
        Some(
            inv.hosts
                .iter()
                .filter(|h| self.may_reach(h))
                .map(|h| h.name.clone())
                .collect(),
        )
    }

    /// Refuse if any of `hosts` is outside the key's targets.
    pub fn check_hosts<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a Host>,
    ) -> Result<(), ApiError> {
        match hosts.into_iter().any(|h| !self.may_reach(h)) {
            false => Ok(()),
            true => Err(outside()),
        }
    }

    /// A failed selection for this key: for a key with `targets`, a host
    /// that does not exist (or a selector matching none) is refused as one
    /// outside them is, so its answers do not tell which hosts exist;
    /// for other keys, the error as it is (400).
    pub fn selection(&self, e: crate::model::error::Error) -> ApiError {
        if self.targets.is_some() && e.code() == 400 {
            outside()
        } else {
            ApiError::from(e)
        }
    }
}

/// What a key with `targets` gets for hosts outside them, and for hosts
/// that do not exist: the same words, naming none.
fn outside() -> ApiError {
    ApiError::forbidden(
        "this key may not act on the hosts this request names: they are outside its targets, or not in the inventory",
    )
}

/// What a request came with: a key (a header), or the status page's
/// session cookie (whose changes must carry the CSRF token).
enum Presented {
    Key(String),
    Session(String),
}

fn presented(req: &Request, tls: bool) -> Option<Presented> {
    if let Some(k) = presented_key(req) {
        return Some(Presented::Key(k));
    }
    cookie_session(req.headers(), cookie_name(tls)).map(Presented::Session)
}

fn presented_key(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string());
    }
    h.get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// Recognise the key (401 without a known one, on every route but
/// `GET /health`, the status page's login form and its POST), run the
/// request, write its audit line. The page's session cookie stands for
/// the key it logged in with while the session lasts and that key is
/// still loaded; a change made with it must carry its CSRF token.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/login" {
        return next.run(req).await;
    }
    // The pages answer their login form to whoever has no session.
    let page = (path == "/" || path.starts_with("/page/")) && req.method() == axum::http::Method::GET;
    let t0 = Instant::now();
    let loaded = state.loaded();
    let presented = presented(&req, state.settings.tls);
    let mut session = None;
    let key = match &presented {
        Some(Presented::Key(k)) => loaded.keys.find(k),
        Some(Presented::Session(id)) => match state.sessions.get(id).await {
            // Found again among the keys loaded now: a reload that removed
            // or replaced the key ended the session even before its sweep.
            Some(s) => {
                let k = loaded.keys.find_digest(&s.key_digest);
                if k.is_none() {
                    state.sessions.end(id).await;
                }
                session = k.map(|_| (id.clone(), s.csrf.clone()));
                k
            }
            None => None,
        },
        None => None,
    };
    let caller = match key {
        Some(k) => Caller {
            name: k.name.clone(),
            role: k.role,
            targets: k.targets.clone(),
        },
        // The page without a session is its login form.
        None if page => return next.run(req).await,
        None => return ApiError::unauthorized().into_response(),
    };
    drop(loaded);
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let dry_run = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "dry_run=true" || kv == "dry_run=1")
    });
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0 .0.clone())
        .unwrap_or_default();
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    // A refused change is audited like any other answer to a known key.
    let resp = match &session {
        Some((_, csrf)) if !safe && !csrf_ok(csrf, req.headers()) => {
            ApiError::forbidden(
                "a change made with the status page's session needs its X-CSRF-Token header",
            )
            .into_response()
        }
        _ => {
            if let Some((id, csrf)) = &session {
                req.extensions_mut()
                    .insert(SessionId(id.clone(), csrf.clone()));
            }
            req.extensions_mut().insert(caller.clone());
            next.run(req).await
        }
    };
    state.audit.record(AuditLine {
        time: crate::model::now_rfc3339(),
        key: caller.name,
        role: caller.role.as_str().to_string(),
        method,
        path,
        status: resp.status().as_u16(),
        job_id: resp.extensions().get::<JobId>().map(|j| j.0.clone()),
        dry_run,
        duration_ms: t0.elapsed().as_millis() as u64,
        peer,
    });
    resp
}
