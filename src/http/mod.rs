//! The REST API: thin axum handlers over the store and the compute pool.

mod admission;
mod auth;
mod cases;
mod compare;
mod dicomweb;
mod drift;
mod gate;
mod models;
mod multipart;
mod prediction_form;
pub mod problem;
mod readers;
mod uploads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_scalar::{Scalar, Servable};

pub use prediction_form::form_body;
pub use problem::Problem;
pub use uploads::ACQUISITION_HEADER;

use crate::compute::Compute;
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub compute: Compute,
    pub config: Arc<Config>,
    pub metrics: Metrics,
}

impl AppState {
    /// What ingest needs.
    fn services(&self) -> crate::ingest::Services<'_> {
        crate::ingest::Services {
            store: &self.store,
            compute: &self.compute,
            config: &self.config,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "segwatch", description = "Scores AI segmentations against radiologists' corrections and watches quality over time."),
    paths(uploads::put_prediction, uploads::put_reference, cases::get_case, cases::list_cases,
          models::put_structures, models::get_structures, compare::compare_versions, readers::report, gate::evaluate, gate::decisions, drift::put_baseline, drift::freeze_baseline,
          drift::get_baseline, drift::list_incidents, drift::acknowledge, drift::drift_plan, drift::strata,
          drift::history,
          drift::alertmanager_webhook, dicomweb::store_instances, dicomweb::store_study_instances,
          healthz, readyz, metrics),
    components(schemas(Problem, uploads::UploadAccepted, FileBody, compare::VersionComparison, readers::ReaderReport, crate::views::GateDecision)),
    modifiers(&BearerAuth, &ProblemResponses),
    tags((name = "uploads", description = "PACS integrations send segmentations"),
         (name = "cases", description = "Results for drill-down"),
         (name = "models", description = "Structure schemas of model versions, comparing versions, deployment gates, and the agreement of several readers"),
         (name = "drift", description = "Baselines, drift incidents, what changed, and the alert plan"),
         (name = "dicomweb", description = "DICOMweb STOW-RS for PACS"),
         (name = "operations", description = "Health, readiness and Prometheus metrics"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
            // HTTP Basic with the key as password, for PACS clients without Bearer.
            components.add_security_scheme(
                "basic",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
            );
        }
    }
}

/// Completes every operation's responses from what the service does for all of
/// them, so the document states them once rather than on every route: errors
/// are `application/problem+json`; routes behind a key answer 401; routes with
/// input answer 400; routes that reach the database answer 503 with
/// Retry-After; every response has a description.
struct ProblemResponses;

/// Routes that answer without the database.
const WITHOUT_DATABASE: [&str; 4] = ["/healthz", "/readyz", "/openapi.json", "/metrics"];

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Content, HeaderBuilder, Ref, RefOr, ResponseBuilder, Type, schema::Object,
        };
        let problem = |description: &str, retry_after: bool| {
            let mut response = ResponseBuilder::new().description(description).content(
                PROBLEM_JSON,
                Content::new(Some(Ref::from_schema_name("Problem"))),
            );
            if retry_after {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::Integer)))
                        .description(Some("seconds to wait before retrying"))
                        .build(),
                );
            }
            RefOr::T(response.build())
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if let Some(json) = response.content.shift_remove("application/json") {
                        let is_problem = matches!(&json, RefOr::T(c) if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")));
                        let media = if is_problem {
                            PROBLEM_JSON
                        } else {
                            "application/json"
                        };
                        response.content.insert(media.to_owned(), json);
                    }
                    if response.description.is_empty() {
                        response.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|code| StatusCode::from_u16(code).ok())
                            .and_then(|code| code.canonical_reason())
                            .unwrap_or("response")
                            .to_owned();
                    }
                }
                let has_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
                    || operation.request_body.is_some();
                if has_input {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| problem("invalid request", false));
                }
                if operation.security.is_some() {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| problem("missing, unknown or revoked key", false));
                }
                if !WITHOUT_DATABASE.contains(&path.as_str()) {
                    responses.entry("503".into()).or_insert_with(|| {
                        problem("database unreachable or service busy; retry later", true)
                    });
                }
            }
        }
    }
}

/// A request body of bytes: a segmentation file, or a multipart of them
/// (documented as a binary string; `Vec<u8>` would read as an integer array).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary, min_length = 1)]
#[allow(dead_code)] // read by the OpenAPI derive only
struct FileBody(Vec<u8>);

/// The media type of every error body (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// Checks a site, case, model or version key ([`crate::ids::check`]): 400
/// `invalid-key` when it breaks the rule.
pub fn valid_key(what: &str, value: &str) -> Result<(), Problem> {
    crate::ids::check(what, value)
        .map_err(|e| Problem::bad_request("invalid-key", "Invalid identifier", e.to_string()))
}

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let api = Router::new()
        .route(
            "/v1/sites/{site}/cases/{case}/prediction",
            put(uploads::put_prediction),
        )
        .route(
            "/v1/sites/{site}/cases/{case}/reference",
            put(uploads::put_reference),
        )
        .route("/v1/sites/{site}/cases/{case}", get(cases::get_case))
        .route("/v1/sites/{site}/cases", get(cases::list_cases))
        .route(
            "/v1/models/{model}/versions/{version}/structures",
            put(models::put_structures).get(models::get_structures),
        )
        .route("/v1/models/{model}/compare", get(compare::compare_versions))
        .route("/v1/models/{model}/readers", get(readers::report))
        .route(
            "/v1/models/{model}/versions/{version}/gate",
            post(gate::evaluate),
        )
        .route(
            "/v1/models/{model}/versions/{version}/gates",
            get(gate::decisions),
        )
        .route(
            "/v1/models/{model}/versions/{version}/baseline",
            put(drift::put_baseline).get(drift::get_baseline),
        )
        .route(
            "/v1/models/{model}/versions/{version}/baseline/freeze",
            post(drift::freeze_baseline),
        )
        .route("/v1/incidents", get(drift::list_incidents))
        .route("/v1/incidents/{id}/ack", post(drift::acknowledge))
        .route("/v1/incidents/{id}/strata", get(drift::strata))
        .route("/v1/incidents/{id}/history", get(drift::history))
        .route("/v1/drift/plan", get(drift::drift_plan))
        .route(
            "/v1/alertmanager/webhook",
            post(drift::alertmanager_webhook),
        )
        .route("/dicom-web/studies", post(dicomweb::store_instances))
        .route(
            "/dicom-web/studies/{study}",
            post(dicomweb::store_study_instances),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()).custom_html(DOCS_HTML))
        .route("/docs/scalar.js", get(docs_script))
        .fallback(|| async { Problem::not_found("no such route") })
        // Inside the decompression layer, so decompressed bytes are counted.
        .layer(middleware::from_fn_with_state(
            admission::BodyBudget::new(
                limits.max_body_memory_bytes,
                limits.max_upload_bytes as u64,
            ),
            admission::admit_body,
        ))
        // Bodies are limited after transfer decompression.
        .layer(DefaultBodyLimit::max(limits.max_upload_bytes))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::map_response(problem::problem_for_rejections))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state.clone());
    let request_id = HeaderName::from_static("x-request-id");
    api.layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(
            Duration::from_secs(limits.request_timeout_secs),
            time_limit,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(move |request: &Request| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The route template, never the path: paths carry case keys.
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), route, request_id = id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Answers 503 problem+json with Retry-After when a request takes longer than
/// `limits.request_timeout_secs` (tower-http's timeout answers an empty body).
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::unavailable(
            format!(
                "the request took longer than {} s (limits.request_timeout_secs); retry later",
                limit.as_secs()
            ),
            5,
        )
        .into_response(),
    }
}

/// Records request latency by route template.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .http_request_duration_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is up")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "database reachable, migrations current"), (status = 503, body = Problem)))]
async fn readyz(State(app): State<AppState>) -> Result<&'static str, Problem> {
    match app.store.ready().await {
        Ok(true) => Ok("ready\n"),
        Ok(false) if app.config.migrate => Err(Problem::unavailable(
            "the database is reachable but the migrations are not all applied yet",
            5,
        )),
        Ok(false) => Err(Problem::unavailable(
            "migrations are not all applied; run segwatch migrate",
            10,
        )),
        // Host, port and database name stay in the log: this route needs no key.
        Err(StoreError::Connect(e)) => Err(Problem::unavailable(e.summary(), 5)),
        Err(e) => Err(Problem::unavailable(
            format!("database not reachable: {e}"),
            5,
        )),
    }
}

/// Every series for a read or admin key; an ingest key sees its own site's.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Prometheus text exposition; an ingest key gets its own site's series only"),
        (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn metrics(State(app): State<AppState>, auth: auth::Auth) -> Response {
    // The queue gauges are read at each scrape (one indexed count), so they are
    // current; the quality gauges come from the periodic refresh. A database
    // that does not answer within a second leaves the last values.
    let counts = tokio::time::timeout(QUEUE_READ_TIMEOUT, app.store.job_counts()).await;
    if let Ok(Ok((queued, running))) = counts {
        app.metrics.jobs_queued.set(queued);
        app.metrics.jobs_running.set(running);
    }
    let text = match (&auth.0.role, &auth.0.site) {
        (crate::store::Role::Ingest, Some(site)) => app.metrics.render_for_site(site),
        _ => app.metrics.render(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// How long a scrape waits for the job counts before answering with the last ones.
const QUEUE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The `/docs` page: Scalar's default page loads its script from a CDN, which an
/// offline network cannot reach; this one loads only [`DOCS_SCRIPT`] from here.
const DOCS_HTML: &str = include_str!("assets/docs.html");

/// Scalar API Reference's standalone browser build (MIT, see
/// `assets/README.md`), embedded so `/docs` works without Internet access.
const DOCS_SCRIPT: &[u8] = include_bytes!("assets/scalar-api-reference.js");

async fn docs_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        DOCS_SCRIPT,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}
