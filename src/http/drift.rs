//! Baselines (frozen, versioned, audited), alerts, and the strata that explain a
//! stream in alarm.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Duration;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::drift::Baseline;
use crate::store::{ALL, Alert, BaselineInfo, Role, Stratum};

/// A baseline upload: one entry per validation case, structure name → Dice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineUpload {
    /// Where the values come from (e.g. "validation set 2024-05").
    pub source: String,
    pub description: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub cases: Vec<BTreeMap<String, f64>>,
}

/// Freezing a baseline from live cases.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// The first this many scored cases (by case time); at least 100.
    pub cases: i64,
}

/// Per-structure samples and the per-case mean (structure `all`).
fn samples(cases: &[BTreeMap<String, f64>]) -> Result<BTreeMap<String, Baseline>, Problem> {
    let invalid =
        |detail: String| Problem::bad_request("invalid-baseline", "Invalid baseline", detail);
    let mut by_structure: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for case in cases {
        for (structure, &dice) in case {
            valid_key("structure", structure).map_err(|p| invalid(p.detail))?;
            by_structure
                .entry(structure.clone())
                .or_default()
                .push(dice);
        }
        if !case.is_empty() {
            let mean = case.values().sum::<f64>() / case.len() as f64;
            by_structure.entry(ALL.into()).or_default().push(mean);
        }
    }
    if by_structure.is_empty() {
        return Err(invalid("no cases".into()));
    }
    by_structure
        .into_iter()
        .map(|(structure, values)| {
            let baseline =
                Baseline::new(values).map_err(|e| invalid(format!("{structure}: {e}")))?;
            Ok((structure, baseline))
        })
        .collect()
}

#[utoipa::path(put, path = "/v1/models/{model}/versions/{version}/baseline", tag = "drift",
    params(("model" = String, Path), ("version" = String, Path)), request_body = BaselineUpload,
    responses((status = 201, body = BaselineInfo), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn put_baseline(
    State(app): State<AppState>,
    auth: Auth,
    Path((model, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<BaselineInfo>), Problem> {
    auth.admin()?;
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    let upload: BaselineUpload = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("invalid-baseline", "Invalid baseline", e.to_string()))?;
    let samples = samples(&upload.cases)?;
    let info = app
        .store
        .create_baseline(
            &model,
            &version,
            &upload.source,
            upload.description.as_deref(),
            &auth.0.key_id,
            &samples,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(post, path = "/v1/models/{model}/versions/{version}/baseline/freeze", tag = "drift",
    params(("model" = String, Path), ("version" = String, Path)), request_body = FreezeRequest,
    responses((status = 201, body = BaselineInfo), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn freeze_baseline(
    State(app): State<AppState>,
    auth: Auth,
    Path((model, version)): Path<(String, String)>,
    Json(request): Json<FreezeRequest>,
) -> Result<(StatusCode, Json<BaselineInfo>), Problem> {
    auth.admin()?;
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    let cases = app
        .store
        .first_scored(&model, &version, request.cases)
        .await?;
    let samples = samples(&cases)?;
    let source = format!("first {} scored cases", cases.len());
    let info = app
        .store
        .create_baseline(&model, &version, &source, None, &auth.0.key_id, &samples)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(get, path = "/v1/models/{model}/versions/{version}/baseline", tag = "drift",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = BaselineInfo), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_baseline(
    State(app): State<AppState>,
    _auth: Auth,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<BaselineInfo>, Problem> {
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    app.store
        .active_baseline(&model, &version)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no baseline for {model} {version}")))
}

/// Which alerts to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `open` (default) or `all`.
    pub state: Option<String>,
}

#[utoipa::path(get, path = "/v1/alerts", tag = "drift", params(AlertQuery),
    responses((status = 200, body = Vec<Alert>), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_alerts(
    State(app): State<AppState>,
    auth: Auth,
    Query(query): Query<AlertQuery>,
) -> Result<Json<Vec<Alert>>, Problem> {
    let all = match query.state.as_deref() {
        None | Some("open") => false,
        Some("all") => true,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid-state",
                "Unknown alert state",
                format!("{other}: use open or all"),
            ));
        }
    };
    // An ingest key sees its own site's streams only.
    let site = if auth.0.role == Role::Ingest {
        auth.0.site.clone()
    } else {
        None
    };
    Ok(Json(app.store.alerts(site.as_deref(), all).await?))
}

/// An acknowledgement.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    /// What was found or done.
    pub note: Option<String>,
}

#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "drift", params(("id" = i64, Path)), request_body = Acknowledgement,
    responses((status = 200, body = Alert), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<Alert>, Problem> {
    auth.admin()?;
    let ack: Acknowledgement = if body.is_empty() {
        Acknowledgement::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Problem::bad_request("invalid-ack", "Invalid acknowledgement", e.to_string())
        })?
    };
    app.store
        .acknowledge(id, &auth.0.key_id, ack.note.as_deref())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no alert {id}")))
}

#[utoipa::path(get, path = "/v1/alerts/{id}/strata", tag = "drift", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Stratum>, description = "acquisition strata of the stream's recent cases, largest Dice drop first"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn strata(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<i64>,
) -> Result<Json<Vec<Stratum>>, Problem> {
    let alert = app
        .store
        .alert(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no alert {id}")))?;
    if alert.site != ALL {
        auth.read(&alert.site)?;
    } else if auth.0.role == Role::Ingest {
        return Err(Problem::forbidden(
            "pooled streams need a read or admin key",
        ));
    }
    let baseline = app
        .store
        .active_baseline(&alert.model, &alert.model_version)
        .await?
        .and_then(|b| {
            b.structures
                .into_iter()
                .find(|s| s.structure == alert.structure)
        })
        .ok_or_else(|| Problem::not_found("the stream has no active baseline"))?;
    let since = alert.observed_at - Duration::days(7);
    let strata = app
        .store
        .strata(
            &alert.site,
            &alert.model,
            &alert.model_version,
            &alert.structure,
            since,
            baseline.mean,
        )
        .await?;
    Ok(Json(strata))
}

/// The body Alertmanager's webhook receiver posts.
#[derive(Debug, Deserialize)]
pub struct Notification {
    pub receiver: String,
    pub alerts: Vec<crate::store::NotifiedAlert>,
}

/// Alertmanager posts delivered notifications here (an admin key); they join the
/// audit trail next to alerts and acknowledgements.
pub async fn alertmanager_webhook(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    auth.admin()?;
    let notification: Notification = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "invalid-notification",
            "Invalid Alertmanager notification",
            e.to_string(),
        )
    })?;
    let recorded = app
        .store
        .record_notification(&notification.receiver, &notification.alerts)
        .await?;
    tracing::info!(receiver = %notification.receiver, alerts = recorded, "alert notification recorded");
    Ok(StatusCode::NO_CONTENT)
}
