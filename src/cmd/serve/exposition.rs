//! How the metrics leave the server: `GET /metrics` (any key), the
//! key-less listener of `--metrics-listen` (loopback only), both in
//! Prometheus text format 0.0.4; and [`track`], the layer around every
//! route that counts requests by the route's template.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::model::keys::Role;

use super::auth::Caller;
use super::error::ApiError;
use super::metrics::{Held, Metrics};
use super::state::AppState;

/// A method as a label: the common ones, else `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The layer around every route: each answer counted by the route's
/// template (`/job/{id}`, never the id), method and status.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    m.http(
        route,
        method,
        resp.status().as_u16(),
        t0.elapsed().as_secs_f64(),
    );
    resp
}

fn text(state: &AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        state.metrics.exposition(Held {
            hosts: state.loaded().inventory.hosts.len(),
            claims: state.claims.held(),
            connections: state.pool.open(),
            live: state.live.as_ref().map(|f| f.stats()),
        }),
    )
        .into_response()
}

/// `GET /metrics`: with any key (read is enough).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "the server's metrics, Prometheus text format 0.0.4 (book: operations/observability.md)", content_type = "text/plain"),
        (status = 401, body = ApiError)),
    security(("bearer" = [])), tag = "server")]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require(Role::Read)?;
    Ok(text(&state))
}

/// `--metrics-listen`: `GET /metrics` alone, without a key, on loopback.
pub async fn listen(
    addr: &str,
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> crate::model::error::Result<std::net::SocketAddr> {
    use crate::model::error::Error;
    let parsed: std::net::SocketAddr = addr.parse().map_err(|_| {
        Error::Usage(format!(
            "--metrics-listen `{addr}`: give a loopback address and port, e.g. 127.0.0.1:9480"
        ))
    })?;
    if !parsed.ip().is_loopback() {
        return Err(Error::Usage(format!(
            "--metrics-listen {addr}: it answers without a key, so only on loopback (127.0.0.1 or [::1]); elsewhere scrape GET /metrics with a read key"
        )));
    }
    let listener = tokio::net::TcpListener::bind(parsed)
        .await
        .map_err(|e| Error::Usage(format!("--metrics-listen {addr}: cannot listen: {e}")))?;
    let bound = listener.local_addr().unwrap_or(parsed);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(s): State<Arc<AppState>>| async move { text(&s) }),
        )
        .with_state(state);
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!("--metrics-listen: {e}");
        }
    });
    Ok(bound)
}
