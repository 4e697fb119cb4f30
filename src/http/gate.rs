//! Deployment gates of model versions (`compare::gate`; docs/compare.md): the
//! decision from a version's stored results, and the audit trail of decisions.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::auth::Auth;
use super::compare::MAX_COMPARE_CASES;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::compare::bootstrap::Bootstrap;
use crate::compare::gate::{GateRule, StructureGate, StructureResults, gate};
use crate::schema::Schema;
use crate::store::{NewGateDecision, VersionDice};
use crate::views::GateDecision;

/// Most gate decisions one listing returns.
pub const MAX_LISTED_DECISIONS: i64 = 100;

/// Which of the version's results the gate reads.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GateQuery {
    /// Only this site's results (ingest keys must name their own site).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub site: Option<String>,
    /// Only results scored since then (RFC 3339), such as the start of a
    /// shadow period.
    pub since: Option<DateTime<Utc>>,
}

/// Which decisions to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionsQuery {
    /// Only decisions that gated this site's results (ingest keys must name
    /// their own site).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub site: Option<String>,
    /// At most this many, newest first (default 20, at most 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// One structure's finding, with its failures in words.
#[derive(Debug, Serialize)]
struct StructureVerdict {
    #[serde(flatten)]
    gate: StructureGate,
    passed: bool,
    /// Each of `failures` in words, in the same order.
    reasons: Vec<String>,
}

/// What the gate found, as recorded.
#[derive(Debug, Serialize)]
struct Evaluation {
    /// Cases read (each case's latest result with the version).
    cases: usize,
    /// Confidence level of the one-sided lower bounds.
    level: f64,
    /// Every structure of the schema, in its order.
    structures: Vec<StructureVerdict>,
}

/// Gates a model version from its stored results: each structure of its
/// schema passes when the one-sided 95 % lower bound of its mean Dice is at
/// least `gate_min_mean_dice` and its failure rate at most
/// `gate_max_failure_rate`; the version passes when every structure does.
/// The decision is recorded with the id of the key that asked.
#[utoipa::path(post, path = "/v1/models/{model}/versions/{version}/gate", tag = "models",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"),
        ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), GateQuery),
    responses((status = 201, body = GateDecision, description = "the decision, recorded (passed or not)"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "no scored case of the version here"),
        (status = 409, body = Problem, description = "the version has no structure schema")),
    security(("bearer" = [])))]
pub async fn evaluate(
    State(app): State<AppState>,
    auth: Auth,
    Path((model, version)): Path<(String, String)>,
    Query(query): Query<GateQuery>,
) -> Result<(StatusCode, Json<GateDecision>), Problem> {
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    let site = query.site.as_deref();
    auth.read_site_or_all(site, "a gate")?;
    let (schema, rows) = tokio::try_join!(
        app.store.schema(&model, &version),
        app.store
            .version_dice(&model, &version, site, query.since, MAX_COMPARE_CASES),
    )?;
    if rows.is_empty() {
        return Err(Problem::not_found(format!(
            "no scored case of {model} {version} here"
        )));
    }
    let Some(schema) = schema else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-schema",
            "No structure schema",
            format!(
                "{model} {version} has no structure schema, where each structure's gate limits are; \
                 set it with PUT /v1/models/{model}/versions/{version}/structures"
            ),
        ));
    };
    // The bootstrap is CPU work: on the compute pool.
    let evaluation = app
        .compute
        .run(0, move || evaluate_schema(&schema, &rows))
        .await??;
    let report = serde_json::to_value(&evaluation).map_err(|e| Problem::internal(e.to_string()))?;
    let passed = evaluation.structures.iter().all(|s| s.passed);
    let decision = app
        .store
        .record_gate_decision(&NewGateDecision {
            model: &model,
            model_version: &version,
            site,
            since: query.since,
            passed,
            report: &report,
            key_id: &auth.0.key_id,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(decision)))
}

/// The gate of every schema structure over the rows' Dice.
fn evaluate_schema(schema: &Schema, rows: &[VersionDice]) -> Result<Evaluation, Problem> {
    let mut dice: HashMap<&str, Vec<f64>> = HashMap::new();
    for r in rows {
        dice.entry(r.structure.as_str()).or_default().push(r.dice);
    }
    let structures: Vec<StructureResults> = schema
        .structures
        .iter()
        .map(|def| StructureResults {
            name: &def.name,
            dice: dice.get(def.name.as_str()).map_or(&[], Vec::as_slice),
            rule: GateRule::for_structure(def),
        })
        .collect();
    let bootstrap = Bootstrap::default();
    let report = gate(&structures, &bootstrap)
        .map_err(|e| Problem::internal(format!("the gate could not be computed: {e}")))?;
    let cases = rows
        .iter()
        .map(|r| (&r.site, &r.case_key))
        .collect::<std::collections::HashSet<_>>()
        .len();
    Ok(Evaluation {
        cases,
        level: bootstrap.level,
        structures: report
            .structures
            .into_iter()
            .map(|gate| StructureVerdict {
                passed: gate.failures.is_empty(),
                reasons: gate.failures.iter().map(ToString::to_string).collect(),
                gate,
            })
            .collect(),
    })
}

/// The latest gate decisions of a model version, newest first.
#[utoipa::path(get, path = "/v1/models/{model}/versions/{version}/gates", tag = "models",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"),
        ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), DecisionsQuery),
    responses((status = 200, body = Vec<GateDecision>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn decisions(
    State(app): State<AppState>,
    auth: Auth,
    Path((model, version)): Path<(String, String)>,
    Query(query): Query<DecisionsQuery>,
) -> Result<Json<Vec<GateDecision>>, Problem> {
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    let site = query.site.as_deref();
    auth.read_site_or_all(site, "a list of gate decisions")?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LISTED_DECISIONS).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-limit",
            "Invalid limit",
            format!("limit must be between 1 and {MAX_LISTED_DECISIONS}"),
        ));
    }
    Ok(Json(
        app.store
            .gate_decisions(&model, &version, site, limit)
            .await?,
    ))
}
