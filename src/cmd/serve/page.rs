//! The status page at `GET /`: hosts, units, maintenance flags and recent
//! jobs rendered on the server, a little inline script that follows
//! running jobs over their event streams, and a dry-run form. The key is
//! given once in a login form, which opens a server-side session; the
//! HttpOnly, SameSite=Strict cookie holds only the session's random id.
//! Changes made with that cookie carry an HMAC of the id under a
//! per-process secret (the CSRF token), which the page embeds. The key is
//! never written into the page or a cookie. Here: reading what the page
//! shows and answering with it (headers, CSP, cookies); its HTML is
//! `render::page`'s, so it is snapshot-tested without a server.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::engine::job_store::JobQuery;
use crate::model::target::Selector;
use crate::render;
use crate::render::fleet::{Grid, GridFilter};
use crate::render::page::{Chrome, PageRunbook, StatusPage};

use super::audit::AuditLine;
use super::auth::Caller;
use super::error::KeepBody;
use super::fleet::fleet_state;
use super::listen::Peer;
use super::session::{clear_cookie, set_cookie, Session, SessionId};
use super::state::AppState;

/// An HTML answer with the page's headers: no caching, no framing, no
/// referrer, scripts only with this answer's nonce.
pub(super) fn html(code: StatusCode, body: String, nonce: &str) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r.extensions_mut().insert(KeepBody);
    r
}

pub(super) fn nonce() -> String {
    let mut n = [0u8; 16];
    let _ = getrandom::fill(&mut n);
    hex::encode(n)
}

pub(super) fn login_form(code: StatusCode, message: Option<&str>) -> Response {
    let n = nonce();
    html(code, render::page::login_page(message, &n), &n)
}

/// Whether a login was sent by another page than this server's own (login
/// CSRF: it would log the browser into the sender's key). Browsers say
/// where a request comes from in `Sec-Fetch-Site`: only `same-origin`
/// and `none` (typed, bookmarked) are ours; `same-site` is another port
/// of this host, another user's server perhaps. Without it, an `Origin`
/// naming another host is refused. (This page's `no-referrer` policy
/// makes browsers send `Origin: null` for its own form.)
fn cross_site(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (None | Some("null"), _) => false,
        (Some(origin), host) => {
            origin
                .split_once("://")
                .map(|(_, authority)| authority.trim_end_matches('/'))
                != host
        }
    }
}

/// Body of `POST /login` (a form).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The key, as `drover serve keygen` printed it.
    key: String,
}

/// `POST /login`: check the key, open a session (a random id kept on the
/// server, ending after `--session-ttl`), set its cookie, back to the
/// page; an unknown key gets the form again (401).
#[utoipa::path(post, path = "/login",
    request_body(content = Login, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "logged in: `Set-Cookie: drover_session=ID; Path=/; HttpOnly; SameSite=Strict` (over TLS `__Host-drover_session=ID; …; Secure`), `Location: /`. ID is a random session id kept on the server until `--session-ttl` passes, logout, or a reload that removes the key; the key is never in the cookie"),
        (status = 400, description = "no key in the form (the form again, HTML)", content_type = "text/html"),
        (status = 401, description = "unknown key (the form again, HTML)", content_type = "text/html"),
        (status = 500, description = "no session could be opened", body = super::error::ApiError)),
    tag = "page")]
pub async fn login(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    headers: HeaderMap,
    form: std::result::Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t0 = std::time::Instant::now();
    if cross_site(&headers) {
        return login_form(
            StatusCode::FORBIDDEN,
            Some("a login sent from another site is refused: open this server's own page and log in there"),
        );
    }
    let Ok(Form(form)) = form else {
        return login_form(StatusCode::BAD_REQUEST, Some("send the key in the form"));
    };
    let key = form.key.trim();
    let loaded = state.loaded();
    let Some(k) = loaded.keys.find(key) else {
        return login_form(StatusCode::UNAUTHORIZED, Some("unknown key"));
    };
    let who = Session {
        key_name: k.name.clone(),
        key_digest: crate::model::keys::key_digest(key),
        csrf: String::new(),
    };
    let role = k.role;
    drop(loaded);
    let id = match state
        .sessions
        .open(who.clone(), state.settings.session_ttl)
        .await
    {
        Ok(id) => id,
        Err(e) => return super::error::ApiError::from(e).into_response(),
    };
    state.audit.record(AuditLine {
        time: crate::model::now_rfc3339(),
        key: who.key_name,
        role: role.as_str().to_string(),
        method: "POST".into(),
        path: "/login".into(),
        status: 303,
        job_id: None,
        dry_run: false,
        duration_ms: t0.elapsed().as_millis() as u64,
        peer: peer.map(|p| p.0 .0 .0.clone()).unwrap_or_default(),
    });
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(state.settings.tls, &id)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`: end the session on the server and empty its cookie (a
/// change: it needs the page's CSRF token like any other).
#[utoipa::path(post, path = "/logout",
    params(("X-CSRF-Token" = String, Header, description = "the page's token (with the session cookie)")),
    responses((status = 303, description = "the session is ended on the server (its id no longer authenticates) and the cookie emptied; `Location: /`"),
        (status = 401, body = super::error::ApiError), (status = 403, description = "no or a wrong X-CSRF-Token", body = super::error::ApiError)),
    security(("bearer" = []), ("session" = [])), tag = "page")]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    session: Option<Extension<SessionId>>,
) -> Response {
    if let Some(Extension(SessionId(id, _))) = session {
        state.sessions.end(&id).await;
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(state.settings.tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Query of `GET /`: the fleet's filter and page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// Only hosts this selector picks (`role:web`, `!lab-3`, ...).
    pub selector: Option<String>,
    /// Tiles show this unit's state, and only hosts that have it.
    pub unit: Option<String>,
    /// The page of tiles, 1-based.
    pub page: Option<usize>,
}

/// Tiles on one page of the fleet.
pub const TILES_PER_PAGE: usize = 200;

/// The session's frame (key, role, CSRF token), or None without one: a
/// bearer key reaches the pages too, but their own requests need the
/// session, so it gets the login form.
pub(super) fn chrome_parts(
    caller: Option<Extension<Caller>>,
    session: Option<Extension<SessionId>>,
) -> Option<(Caller, String)> {
    let Extension(caller) = caller?;
    let Extension(SessionId(_, csrf)) = session?;
    Some((caller, csrf))
}

/// `GET /`: the page, or the login form without a session.
#[utoipa::path(get, path = "/", params(FleetQuery),
    responses((status = 200, description = "the status page (the fleet's tiles, maintenance flags, recent jobs, the dry-run form), or without a session cookie the login form", content_type = "text/html")),
    security((), ("session" = [])), tag = "page")]
pub async fn page(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    session: Option<Extension<SessionId>>,
    q: std::result::Result<Query<FleetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some((caller, csrf)) = chrome_parts(caller, session) else {
        return login_form(StatusCode::OK, None);
    };
    let (q, mut filter_error) = match q {
        Ok(Query(q)) => (q, None),
        Err(e) => (FleetQuery::default(), Some(format!("the filter: {e}"))),
    };
    let filter = GridFilter {
        selector: q.selector.unwrap_or_default().trim().to_string(),
        unit: q.unit.unwrap_or_default().trim().to_string(),
    };
    let loaded = state.loaded();
    let selector = match filter.selector.as_str() {
        "" => None,
        raw => match Selector::parse(raw) {
            Ok(s) => Some(s),
            Err(m) => {
                filter_error = Some(format!("hosts `{raw}`: {m}"));
                None
            }
        },
    };
    let unit = match filter.unit.as_str() {
        "" => None,
        raw => match crate::model::unit::UnitName::parse(raw) {
            Ok(u) => Some(u.as_str().to_string()),
            Err(m) => {
                filter_error = Some(format!("unit `{raw}`: {m}"));
                None
            }
        },
    };
    let hosts: Vec<String> = loaded
        .inventory
        .hosts
        .iter()
        .filter(|h| selector.as_ref().is_none_or(|s| s.matches(h)))
        .map(|h| h.name.clone())
        .collect();
    let runbooks: Vec<PageRunbook> = loaded
        .runbooks
        .values()
        .map(|rb| PageRunbook {
            name: rb.name.clone(),
            // Validated when loaded; a runbook that no longer parses is
            // offered without inputs and its dry run says why.
            params: rb
                .declared()
                .map(|pb| pb.declared.views())
                .unwrap_or_default(),
        })
        .collect();
    let within = caller.job_scope(&loaded.inventory);
    drop(loaded);
    let mut fleet = fleet_state(&state, &caller, &hosts).await;
    if let Some(u) = &unit {
        // Hosts without the unit are left out; unread ones stay (they
        // might have it).
        fleet
            .hosts
            .retain(|h| h.error.is_some() || h.units.iter().any(|x| x.name == *u));
    }
    let filter = GridFilter {
        unit: unit.unwrap_or_default(),
        ..filter
    };
    let jobs = state.jobs.list(&JobQuery {
        limit: 20,
        offset: 0,
        status: None,
        within,
        ..JobQuery::default()
    });
    let n = nonce();
    let chrome = Chrome {
        key_name: &caller.name,
        role: caller.role,
        csrf: &csrf,
    };
    let grid = Grid {
        fleet: &fleet,
        filter: &filter,
        filter_error: filter_error.as_deref(),
        page: q.page.unwrap_or(1),
        per_page: TILES_PER_PAGE,
        now: chrono::Utc::now(),
    };
    let body = render::page::status_page(
        &StatusPage {
            chrome: &chrome,
            grid: &grid,
            jobs: &jobs,
            runbooks: &runbooks,
        },
        &n,
    );
    let body = with_plans(&state, &caller, body, &n);
    html(StatusCode::OK, body, &n)
}

/// The page with its pending plans' section.
fn with_plans(state: &AppState, caller: &Caller, body: String, nonce: &str) -> String {
    let plans = super::plans::pending(state, caller);
    let loaded = state.loaded();
    let shown: Vec<render::page_plans::PagePlan<'_>> = plans
        .iter()
        .map(|p| render::page_plans::PagePlan {
            plan: p,
            needed: loaded
                .runbooks
                .get(&p.runbook)
                .and_then(|rb| rb.approvals().ok())
                .unwrap_or(0),
        })
        .collect();
    render::page_plans::with_plans(body, &shown, &caller.name, caller.role, nonce)
}
