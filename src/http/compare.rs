//! Comparing two versions of a model on the cases each scored
//! (`compare::versions`; docs/compare.md).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::compare::versions::{CaseDice, CompareSettings, Comparison, compare};
use crate::store::VersionDice;

/// Most recent cases of each version a comparison or a gate reads: bounds the
/// query and the bootstrap (10,000 resamples of at most this many cases per
/// structure).
pub const MAX_COMPARE_CASES: i64 = 5000;

/// The versions to compare, and where.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Version A, the reference (usually the one in production).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub a: String,
    /// Version B, the candidate.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub b: String,
    /// Only this site's cases (ingest keys must name their own site).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub site: Option<String>,
}

/// One structure compared between the versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct StructureComparison {
    pub structure: String,
    /// Cases, means, the difference B − A with its 95 % bootstrap interval,
    /// the rank test, failure rates, the verdict and the worst paired cases.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub comparison: Comparison,
}

/// A structure only one version scored, or whose statistics failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotCompared {
    pub structure: String,
    pub reason: String,
}

/// Versions A and B of a model, structure by structure.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionComparison {
    pub model: String,
    pub a: String,
    pub b: String,
    pub site: Option<String>,
    /// Cases read per version (the most recent, at most 5,000).
    pub cases_a: usize,
    pub cases_b: usize,
    pub structures: Vec<StructureComparison>,
    pub not_compared: Vec<NotCompared>,
}

/// Compares versions A and B of a model per structure: paired on the cases
/// both scored when they scored the same cases (Wilcoxon signed-rank), else
/// unpaired (Mann–Whitney), with a bootstrap interval of the mean Dice
/// difference B − A; B is called worse or better only when the interval
/// excludes 0.
#[utoipa::path(get, path = "/v1/models/{model}/compare", tag = "models",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), CompareQuery),
    responses((status = 200, body = VersionComparison), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn compare_versions(
    State(app): State<AppState>,
    auth: Auth,
    Path(model): Path<String>,
    Query(query): Query<CompareQuery>,
) -> Result<Json<VersionComparison>, Problem> {
    valid_key("model", &model)?;
    valid_key("model_version", &query.a)?;
    valid_key("model_version", &query.b)?;
    let site = query.site.as_deref();
    auth.read_site_or_all(site, "a comparison")?;
    let (a, b) = tokio::try_join!(
        app.store
            .version_dice(&model, &query.a, site, None, MAX_COMPARE_CASES),
        app.store
            .version_dice(&model, &query.b, site, None, MAX_COMPARE_CASES),
    )?;
    for (version, rows) in [(&query.a, &a), (&query.b, &b)] {
        if rows.is_empty() {
            return Err(Problem::not_found(format!(
                "no scored case of {model} {version} here"
            )));
        }
    }
    let cases = |rows: &[VersionDice]| {
        rows.iter()
            .map(|r| (&r.site, &r.case_key))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let (cases_a, cases_b) = (cases(&a), cases(&b));
    // The bootstrap is CPU work: on the compute pool.
    let (structures, not_compared) = app
        .compute
        .run(0, move || by_structure(&a, &b))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(Json(VersionComparison {
        model,
        a: query.a,
        b: query.b,
        site: query.site,
        cases_a,
        cases_b,
        structures,
        not_compared,
    }))
}

/// Each structure's Dice by case (`site/case`), in structure order.
fn grouped(rows: &[VersionDice]) -> BTreeMap<&str, Vec<(String, f64)>> {
    let mut out: BTreeMap<&str, Vec<(String, f64)>> = BTreeMap::new();
    for r in rows {
        out.entry(r.structure.as_str())
            .or_default()
            .push((format!("{}/{}", r.site, r.case_key), r.dice));
    }
    out
}

/// Scores as the comparison reads them.
fn view(scores: &[(String, f64)]) -> Vec<CaseDice<'_>> {
    scores
        .iter()
        .map(|(case, dice)| CaseDice { case, dice: *dice })
        .collect()
}

/// The structures both versions scored, compared; the others, with why not.
fn by_structure(
    a: &[VersionDice],
    b: &[VersionDice],
) -> (Vec<StructureComparison>, Vec<NotCompared>) {
    let (a, b) = (grouped(a), grouped(b));
    let settings = CompareSettings::default();
    let mut compared = Vec::new();
    let mut not_compared = Vec::new();
    let names: std::collections::BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    for structure in names {
        let outcome = match (a.get(structure), b.get(structure)) {
            (Some(sa), Some(sb)) => {
                compare(&view(sa), &view(sb), &settings).map_err(|e| e.to_string())
            }
            (Some(_), None) => Err("only version A scored it".to_owned()),
            _ => Err("only version B scored it".to_owned()),
        };
        match outcome {
            Ok(comparison) => compared.push(StructureComparison {
                structure: structure.to_owned(),
                comparison,
            }),
            Err(reason) => not_compared.push(NotCompared {
                structure: structure.to_owned(),
                reason,
            }),
        }
    }
    (compared, not_compared)
}
