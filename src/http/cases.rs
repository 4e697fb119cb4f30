//! Reading cases: one case with its status and structures, and the worst cases
//! of a site for drill-down.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Auth;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::store::CaseFilter;
use crate::views::{CaseSummary, CaseView};

#[utoipa::path(get, path = "/v1/sites/{site}/cases/{case}", tag = "cases",
    params(("site" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("case" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$")),
    responses((status = 200, body = CaseView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_case(
    State(app): State<AppState>,
    auth: Auth,
    Path((site, case)): Path<(String, String)>,
) -> Result<Json<CaseView>, Problem> {
    valid_key("site", &site)?;
    valid_key("case", &case)?;
    auth.read(&site)?;
    app.store
        .case_view(&site, &case)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no case {case} at site {site}")))
}

/// Filters of the case listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Rank by this structure's Dice and show only it.
    #[param(pattern = "^[^\\u0000]*$")]
    pub structure: Option<String>,
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub model_version: Option<String>,
    /// `dice` (worst first; the only order).
    #[param(pattern = "^dice$")]
    pub order: Option<String>,
    /// At most this many cases (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only cases scored since then (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Acquisition filters (text without NUL characters).
    #[param(pattern = "^[^\\u0000]*$")]
    pub scanner_manufacturer: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub scanner_model: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub protocol: Option<String>,
    /// Slice-thickness band, in mm (inclusive).
    pub slice_thickness_min_mm: Option<f64>,
    pub slice_thickness_max_mm: Option<f64>,
}

/// Scored cases of a site, worst Dice first: each case's latest result, when
/// it matches the filters (an earlier result of the case is never listed).
#[utoipa::path(get, path = "/v1/sites/{site}/cases", tag = "cases",
    params(("site" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ListQuery),
    responses((status = 200, body = Vec<CaseSummary>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_cases(
    State(app): State<AppState>,
    auth: Auth,
    Path(site): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<CaseSummary>>, Problem> {
    valid_key("site", &site)?;
    if let Some(version) = &query.model_version {
        valid_key("model_version", version)?;
    }
    auth.read(&site)?;
    if query.order.as_deref().is_some_and(|o| o != "dice") {
        return Err(Problem::bad_request(
            "invalid-order",
            "Unknown order",
            "order can only be dice (worst first)",
        ));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-limit",
            "Invalid limit",
            "limit must be between 1 and 500",
        ));
    }
    Problem::refuse_nul(
        [
            &query.scanner_manufacturer,
            &query.scanner_model,
            &query.protocol,
            &query.structure,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str),
    )?;
    let filter = CaseFilter {
        site,
        structure: query.structure,
        model_version: query.model_version,
        since: query.since,
        limit,
        scanner_manufacturer: query.scanner_manufacturer,
        scanner_model: query.scanner_model,
        protocol: query.protocol,
        slice_thickness_mm: (query.slice_thickness_min_mm, query.slice_thickness_max_mm),
    };
    Ok(Json(app.store.worst_cases(&filter).await?))
}
