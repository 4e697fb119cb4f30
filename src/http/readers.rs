//! The agreement of several readers on a model version's cases, structure by
//! structure (`compare::readers::summarize`; docs/compare.md "Several readers").

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::compare::readers::{AgreementSummary, CaseAgreement, summarize};

/// The version to report on, and where.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadersQuery {
    /// The model version.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub version: String,
    /// Only this site's cases (ingest keys must name their own site).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub site: Option<String>,
}

/// One structure's agreement over the cases with two readers or more.
#[derive(Debug, Serialize, ToSchema)]
pub struct StructureReaders {
    pub structure: String,
    /// `cases`, `mean_inter_reader_dice`, `mean_ai_vs_reader_dice`,
    /// `mean_ai_vs_consensus_dice`, `ambiguous_cases` and the verdict
    /// `within_variability`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub summary: AgreementSummary,
}

/// A model version against its readers, structure by structure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReaderReport {
    pub model: String,
    pub model_version: String,
    pub site: Option<String>,
    pub structures: Vec<StructureReaders>,
}

/// The agreement of the readers of a model version's cases with two readers
/// or more, and of the version's latest predictions with them: per structure,
/// the mean inter-reader Dice, the AI's mean Dice against each reader and
/// against their strict-majority consensus, the ambiguous cases, and whether
/// the AI is within inter-reader variability.
#[utoipa::path(get, path = "/v1/models/{model}/readers", tag = "models",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ReadersQuery),
    responses((status = 200, body = ReaderReport), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn report(
    State(app): State<AppState>,
    auth: Auth,
    Path(model): Path<String>,
    Query(query): Query<ReadersQuery>,
) -> Result<Json<ReaderReport>, Problem> {
    valid_key("model", &model)?;
    valid_key("model_version", &query.version)?;
    let site = query.site.as_deref();
    auth.read_site_or_all(site, "a reader report")?;
    let rows = app
        .store
        .reader_agreements(&model, &query.version, site)
        .await?;
    if rows.is_empty() {
        return Err(Problem::not_found(format!(
            "no case of {model} {} with two readers or more here",
            query.version
        )));
    }
    let mut by_structure: BTreeMap<String, Vec<CaseAgreement>> = BTreeMap::new();
    for (structure, agreement) in rows {
        by_structure.entry(structure).or_default().push(agreement);
    }
    let structures = by_structure
        .into_iter()
        .filter_map(|(structure, cases)| {
            Some(StructureReaders {
                summary: summarize(&cases)?,
                structure,
            })
        })
        .collect();
    Ok(Json(ReaderReport {
        model,
        model_version: query.version,
        site: query.site,
        structures,
    }))
}
