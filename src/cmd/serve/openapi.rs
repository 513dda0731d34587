//! The OpenAPI 3.1 document of every route, generated from the handlers'
//! annotations and the types they answer with.

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "drover_session",
                    "the status page's session (POST /login); changes also need X-CSRF-Token",
                ),
            )),
        );
        c.add_security_scheme(
            "consul_token",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::new("X-Consul-Token"),
            )),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "drover", description = "drover serve: osapi's node service API (its current /api surface, and the seed's /node), jobs and runbooks, Redis Enterprise- and Consul agent-compatible routes over the drover engine. Errors are always {error, details, code}."),
    paths(
        super::node::service_action, super::node::list_services, super::node::one_service,
        super::osapi::log::unit_log,
        super::jobs::list_jobs, super::jobs::get_job, super::jobs::job_events, super::jobs::cancel_job, super::jobs::retry_job, super::jobs::resume_job,
        super::jobs::list_runbooks, super::jobs::run_runbook,
        super::plans::make_plan, super::plans::upload_plan, super::plans::list_plans,
        super::plans::get_plan, super::plans::approve_plan, super::plans::apply_plan,
        super::jobs::health, super::jobs::reload, super::jobs::audit, serve_spec,
        super::exposition::metrics,
        super::redis::local_services, super::redis::local_operation, super::redis::cluster_operation,
        super::consul::services, super::consul::service, super::consul::health_by_name,
        super::consul::health_by_id, super::consul::register, super::consul::deregister,
        super::consul::maintenance, super::page::page, super::page::login, super::page::logout,
        super::pages::host, super::pages::history, super::pages::job, super::pages::job_live,
        super::pages::dryrun, super::pages::maintenance,
        super::osapi::service::list_services, super::osapi::service::one_service,
        super::osapi::service::service_action, super::osapi::unitfile::create_unit,
        super::osapi::unitfile::update_unit, super::osapi::unitfile::delete_unit,
        super::osapi::job::list_jobs, super::osapi::job::get_job, super::osapi::job::delete_job,
        super::osapi::job::retry_job,
    ),
    components(schemas(super::error::ApiError)),
    modifiers(&Bearer),
)]
struct Api;

/// The document as JSON text (what `schema/openapi.json` holds).
pub fn spec_json() -> String {
    let mut text = Api::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json",
    responses((status = 200, description = "this document"), (status = 401, body = super::error::ApiError)),
    security(("bearer" = [])), tag = "server")]
pub async fn serve_spec() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        spec_json(),
    )
        .into_response()
}
