//! Baselines (frozen, versioned, audited), incidents, the alert plan, the
//! strata that explain a stream in alarm, and its replayed detector history.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Duration;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::problem::{Problem, json_object};
use super::{AppState, valid_key};
use crate::drift::incident::StreamId;
use crate::drift::{Baseline, Metric};
use crate::store::{ALL, CaseValues, Role, Samples};
use crate::views::{BaselineInfo, HistoryAudit, IncidentView, Stratum};

/// A baseline upload: one entry per validation case, structure name → Dice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineUpload {
    /// Where the values come from (e.g. "validation set 2024-05").
    pub source: String,
    pub description: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub cases: Vec<BTreeMap<String, f64>>,
    /// Samples of the other metrics drift can watch (`lesion_sensitivity`,
    /// `ece`): metric → structure → per-case values (at least 100 each; ECE
    /// as scored, lower is better).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metrics: BTreeMap<Metric, BTreeMap<String, Vec<f64>>>,
}

/// Freezing a baseline from live cases.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// The first this many scored cases (by case time); at least 100. A JSON
    /// number, integral (`150.0` is 150, as JSON Schema counts it).
    #[schema(value_type = i64, minimum = 100, maximum = 100000)]
    pub cases: f64,
}

/// Most cases a baseline can be frozen from.
const MAX_FREEZE_CASES: i64 = 100_000;

fn invalid(detail: String) -> Problem {
    Problem::bad_request("invalid-baseline", "Invalid baseline", detail)
}

/// Per-structure Dice samples and the per-case mean (structure `all`), and
/// the samples of other metrics (`others`, values as scored). Every sample
/// needs at least [`crate::drift::MIN_BASELINE`] values in 0..=1.
fn samples(
    cases: &[BTreeMap<String, f64>],
    others: BTreeMap<(Metric, String), Vec<f64>>,
) -> Result<Samples, Problem> {
    let mut by_stream: BTreeMap<(Metric, String), Vec<f64>> = BTreeMap::new();
    for case in cases {
        for (structure, &dice) in case {
            by_stream
                .entry((Metric::Dice, structure.clone()))
                .or_default()
                .push(dice);
        }
        if !case.is_empty() {
            let mean = case.values().sum::<f64>() / case.len() as f64;
            by_stream
                .entry((Metric::Dice, ALL.into()))
                .or_default()
                .push(mean);
        }
    }
    if by_stream.is_empty() {
        return Err(invalid("no cases".into()));
    }
    by_stream.extend(others);
    by_stream
        .into_iter()
        .map(|((metric, structure), values)| {
            valid_key("structure", &structure).map_err(|p| invalid(p.detail))?;
            let what = match metric {
                Metric::Dice => structure.clone(),
                _ => format!("{structure} {metric}"),
            };
            if let Some(v) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(invalid(format!("{what}: {v} is not between 0 and 1")));
            }
            let scores = values.into_iter().map(|v| metric.score(v)).collect();
            let baseline = Baseline::new(scores).map_err(|e| invalid(format!("{what}: {e}")))?;
            Ok(((metric, structure), baseline))
        })
        .collect()
}

/// The other metrics' samples of the first scored cases: those the schema
/// watches, with at least [`crate::drift::MIN_BASELINE`] values (a sample
/// too small for a baseline is left out, and its stream does not start).
fn watched_samples(
    cases: &[CaseValues],
    schema: Option<&crate::schema::Schema>,
) -> BTreeMap<(Metric, String), Vec<f64>> {
    let watched: Vec<(Metric, String)> = schema
        .iter()
        .flat_map(|s| &s.structures)
        .flat_map(|d| d.drift_metrics.iter().map(|m| (*m, d.name.clone())))
        .collect();
    watched
        .into_iter()
        .map(|key| {
            let values: Vec<f64> = cases.iter().filter_map(|c| c.get(&key).copied()).collect();
            (key, values)
        })
        .filter(|(_, values)| values.len() >= crate::drift::MIN_BASELINE)
        .collect()
}

#[utoipa::path(put, path = "/v1/models/{model}/versions/{version}/baseline", tag = "drift",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$")), request_body = BaselineUpload,
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
    let upload: BaselineUpload = json_object(&body)
        .map_err(|e| Problem::bad_request("invalid-baseline", "Invalid baseline", e))?;
    Problem::refuse_nul(
        [upload.source.as_str()]
            .into_iter()
            .chain(upload.description.as_deref()),
    )?;
    if upload.metrics.contains_key(&Metric::Dice) {
        return Err(invalid("Dice values go in cases, not in metrics".into()));
    }
    let others = upload
        .metrics
        .into_iter()
        .flat_map(|(metric, structures)| {
            structures
                .into_iter()
                .map(move |(structure, values)| ((metric, structure), values))
        })
        .collect();
    let samples = samples(&upload.cases, others)?;
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
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$")), request_body = FreezeRequest,
    responses((status = 201, body = BaselineInfo), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "fewer scored cases than a baseline needs")),
    security(("bearer" = [])))]
pub async fn freeze_baseline(
    State(app): State<AppState>,
    auth: Auth,
    Path((model, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<BaselineInfo>), Problem> {
    auth.admin()?;
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    let request: FreezeRequest = json_object(&body).map_err(invalid)?;
    let allowed = crate::drift::MIN_BASELINE as i64..=MAX_FREEZE_CASES;
    if request.cases.fract() != 0.0 || !allowed.contains(&(request.cases as i64)) {
        return Err(Problem::bad_request(
            "invalid-baseline",
            "Invalid baseline",
            format!(
                "cases must be from {} to {}",
                allowed.start(),
                allowed.end()
            ),
        ));
    }
    let cases = app
        .store
        .first_scored(&model, &version, request.cases as i64)
        .await?;
    if cases.len() < crate::drift::MIN_BASELINE {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-enough-cases",
            "Not enough scored cases",
            format!(
                "{model} {version} has {} scored cases; a baseline needs at least {}",
                cases.len(),
                crate::drift::MIN_BASELINE
            ),
        ));
    }
    let schema = app.store.schema(&model, &version).await?;
    let others = watched_samples(&cases, schema.as_ref());
    let dice: Vec<BTreeMap<String, f64>> = cases
        .iter()
        .map(|case| {
            case.iter()
                .filter(|((metric, _), _)| *metric == Metric::Dice)
                .map(|((_, structure), value)| (structure.clone(), *value))
                .collect()
        })
        .collect();
    let samples = samples(&dice, others)?;
    let source = format!("first {} scored cases", cases.len());
    let info = app
        .store
        .create_baseline(&model, &version, &source, None, &auth.0.key_id, &samples)
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(get, path = "/v1/models/{model}/versions/{version}/baseline", tag = "drift",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$")),
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

/// Which incidents to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// `open` (default) or `all`.
    #[param(pattern = "^(open|all)$")]
    pub state: Option<String>,
}

#[utoipa::path(get, path = "/v1/incidents", tag = "drift", params(IncidentQuery),
    responses((status = 200, body = Vec<IncidentView>, description = "incidents, newest first"), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_incidents(
    State(app): State<AppState>,
    auth: Auth,
    Query(query): Query<IncidentQuery>,
) -> Result<Json<Vec<IncidentView>>, Problem> {
    let all = match query.state.as_deref() {
        None | Some("open") => false,
        Some("all") => true,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid-state",
                "Unknown incident state",
                format!("{other}: use open or all"),
            ));
        }
    };
    // An ingest key sees the incidents its own site's streams are part of.
    let site = if auth.0.role == Role::Ingest {
        auth.0.site.clone()
    } else {
        None
    };
    Ok(Json(app.store.incidents(site.as_deref(), all).await?))
}

/// An acknowledgement.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    /// What was found or done (text without NUL characters).
    #[schema(pattern = "^[^\\u0000]*$")]
    pub note: Option<String>,
}

/// Records who looked at an incident and what they found; the incident stays
/// open until its streams have been back in control for the hold period.
#[utoipa::path(post, path = "/v1/incidents/{id}/ack", tag = "drift", params(("id" = i64, Path)),
    request_body(content = Option<Acknowledgement>, description = "optional: an empty body acknowledges without a note"),
    responses((status = 200, body = IncidentView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<IncidentView>, Problem> {
    auth.admin()?;
    let ack: Acknowledgement = if body.is_empty() || body.trim_ascii() == b"null" {
        Acknowledgement::default()
    } else {
        json_object(&body)
            .map_err(|e| Problem::bad_request("invalid-ack", "Invalid acknowledgement", e))?
    };
    Problem::refuse_nul(ack.note.as_deref())?;
    app.store
        .acknowledge(id, &auth.0.key_id, ack.note.as_deref())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no incident {id}")))
}

/// An incident the key may see: its own site's, or any with a read or admin key.
async fn visible_incident(app: &AppState, auth: &Auth, id: i64) -> Result<IncidentView, Problem> {
    let incident = app
        .store
        .incident(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no incident {id}")))?;
    if incident.site != ALL {
        auth.read(&incident.site)?;
    } else if auth.0.role == Role::Ingest {
        return Err(Problem::forbidden(
            "pooled streams need a read or admin key",
        ));
    }
    Ok(incident)
}

/// Cases of the opening stream's history shown up to the first alarm.
const HISTORY_CONTEXT: usize = 20;

/// The longest history a request replays (a pooled stream of a large network
/// gathers millions of cases a year; this bounds the memory one request takes).
const MAX_REPLAYED_CASES: usize = 200_000;

#[utoipa::path(get, path = "/v1/incidents/{id}/history", tag = "drift", params(("id" = i64, Path)),
    responses((status = 200, body = HistoryAudit, description = "the opening stream's stored detector history, replayed from its baseline's start and compared"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn history(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<i64>,
) -> Result<Json<HistoryAudit>, Problem> {
    let incident = visible_incident(&app, &auth, id).await?;
    let history = app
        .store
        .stream_history(
            &incident.model,
            &incident.model_version,
            &StreamId {
                site: incident.site.clone(),
                structure: incident.structure.clone(),
                metric: Metric::parse(&incident.metric).unwrap_or_default(),
            },
            MAX_REPLAYED_CASES,
        )
        .await?
        .ok_or_else(|| Problem::not_found("the stream has no stored history"))?;
    // Replaying a long stream is CPU work: it runs on the bounded pool, not on
    // the async runtime's threads.
    let audit = app
        .compute
        .run(0, move || history.audit(HISTORY_CONTEXT))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(Json(audit))
}

#[utoipa::path(get, path = "/v1/incidents/{id}/strata", tag = "drift", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Stratum>, description = "acquisition strata of the stream's recent cases, largest Dice drop first (Dice whatever the incident's metric)"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn strata(
    State(app): State<AppState>,
    auth: Auth,
    Path(id): Path<i64>,
) -> Result<Json<Vec<Stratum>>, Problem> {
    let incident = visible_incident(&app, &auth, id).await?;
    let baseline = app
        .store
        .active_baseline(&incident.model, &incident.model_version)
        .await?
        .and_then(|b| {
            b.structures
                .into_iter()
                .find(|s| s.structure == incident.structure && s.metric == Metric::Dice.as_str())
        })
        .ok_or_else(|| Problem::not_found("the stream has no active baseline"))?;
    let since = incident.observed_at - Duration::days(7);
    let strata = app
        .store
        .strata(
            &incident.site,
            &incident.model,
            &incident.model_version,
            &incident.structure,
            since,
            baseline.mean,
        )
        .await?;
    Ok(Json(strata))
}

/// Most streams the plan endpoint simulates per change: each costs CPU on the
/// compute pool, and any read key may ask.
const MAX_PLAN_STREAMS: usize = 200;

/// Options of the alert plan.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// Simulated streams per change for the delays (10 to 200, default 200;
    /// `segwatch drift plan` simulates more, offline).
    #[param(minimum = 10, maximum = 200)]
    pub streams: Option<usize>,
}

/// The alert plan of the running deployment: its active streams summarised as
/// a fleet (sites, structures, structures watching each other metric, median
/// case rate of a site's Dice structure stream, smallest active baseline), with
/// the configured budget.
#[utoipa::path(get, path = "/v1/drift/plan", tag = "drift", params(PlanQuery),
    responses((status = 200, body = Object, description = "expected false alerts a month per detector and detection delays"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn drift_plan(
    State(app): State<AppState>,
    auth: Auth,
    Query(query): Query<PlanQuery>,
) -> Result<Json<crate::drift::plan::Plan>, Problem> {
    if auth.0.role == Role::Ingest {
        return Err(Problem::forbidden(
            "the plan covers every site: use a read or admin key",
        ));
    }
    let streams = query.streams.unwrap_or(200);
    if !(10..=MAX_PLAN_STREAMS).contains(&streams) {
        return Err(Problem::bad_request(
            "invalid-streams",
            "Invalid stream count",
            format!("streams={streams}: use 10 to {MAX_PLAN_STREAMS}"),
        ));
    }
    let states = app.store.active_stream_states().await?;
    let baseline = app.store.smallest_active_baseline().await?;
    let (Some(baseline), false) = (baseline, states.is_empty()) else {
        return Err(Problem::not_found(
            "no active drift streams yet: freeze a baseline and score cases first",
        ));
    };
    let sites: std::collections::BTreeSet<&str> = states
        .iter()
        .map(|s| s.site.as_str())
        .filter(|s| *s != ALL)
        .collect();
    // Structures watched with each metric (Dice: every structure).
    let watched: std::collections::BTreeSet<(Metric, &str)> = states
        .iter()
        .filter(|s| s.structure != ALL)
        .map(|s| (s.metric, s.structure.as_str()))
        .collect();
    let mut structures: BTreeMap<Metric, u32> = BTreeMap::new();
    for (metric, _) in watched {
        *structures.entry(metric).or_default() += 1;
    }
    let mut rates: Vec<f64> = states
        .iter()
        .filter(|s| s.site != ALL && s.structure != ALL && s.metric == Metric::Dice)
        .map(|s| s.state.cases_per_day())
        .collect();
    rates.sort_by(f64::total_cmp);
    let fleet = crate::drift::plan::Fleet {
        sites: sites.len().max(1) as u32,
        structures: structures.remove(&Metric::Dice).unwrap_or(0).max(1),
        watched: structures,
        cases_per_day: rates.get(rates.len() / 2).copied().unwrap_or(1.0).max(0.1),
        baseline_cases: baseline as usize,
        target: app.config.drift.target(),
        failure_rate: 0.03,
        failure_threshold: crate::schema::DEFAULT_FAILURE_THRESHOLD,
    };
    let plan = app
        .compute
        .run(0, move || {
            crate::drift::plan::plan(
                &fleet,
                &crate::drift::plan::DEFAULT_SPREADS,
                streams,
                crate::drift::plan::HORIZON_DAYS,
            )
        })
        .await
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(Json(plan))
}

/// The body Alertmanager's webhook receiver posts (other fields are ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub struct Notification {
    /// The receiver that sent it.
    pub receiver: String,
    /// The alerts notified: status, labels, annotations, startsAt, endsAt, fingerprint.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<crate::store::NotifiedAlert>,
}

/// Alertmanager posts delivered notifications here (an admin key); they join the
/// audit trail next to incidents and acknowledgements.
#[utoipa::path(post, path = "/v1/alertmanager/webhook", tag = "drift",
    request_body(content = Notification, description = "Alertmanager's webhook payload"),
    responses((status = 204, description = "recorded"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn alertmanager_webhook(
    State(app): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    auth.admin()?;
    let notification: Notification = json_object(&body).map_err(|e| {
        Problem::bad_request(
            "invalid-notification",
            "Invalid Alertmanager notification",
            e,
        )
    })?;
    let mut texts = vec![notification.receiver.as_str()];
    for alert in &notification.alerts {
        texts.push(&alert.status);
        for map in [&alert.labels, &alert.annotations] {
            texts.extend(map.keys().map(String::as_str));
            texts.extend(map.values().filter_map(serde_json::Value::as_str));
        }
    }
    Problem::refuse_nul(texts)?;
    let recorded = app
        .store
        .record_notification(&notification.receiver, &notification.alerts)
        .await?;
    tracing::info!(receiver = %notification.receiver, alerts = recorded, "alert notification recorded");
    Ok(StatusCode::NO_CONTENT)
}
