//! Reading cases back: status, revisions, and scored structures.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Lite, at, classify, json, parse};
use crate::store::Result;
use crate::store::results::{
    CaseFilter, LatestResult, STRUCTURE_COLUMNS, StructureRow, VersionJob, assemble_case,
    by_result, case_lesions,
};
use crate::views::{CaseLesions, CaseSummary, CaseView, Revision, StructureView};

impl Lite {
    /// See `Store::structures`: ids passed as one JSON array.
    async fn structures(
        &self,
        result_ids: &[i64],
        only: Option<&str>,
    ) -> Result<HashMap<i64, Vec<StructureView>>> {
        let sql = format!(
            "SELECT {STRUCTURE_COLUMNS} FROM structure_results
             WHERE result_id IN (SELECT value FROM json_each($1)) AND ($2 IS NULL OR structure = $2)
             ORDER BY result_id, position"
        );
        let rows: Vec<StructureRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(json(&result_ids)?)
            .bind(only)
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        by_result(rows)
    }

    /// See `Store::lesions`: ids passed as one JSON array.
    async fn lesions(&self, result_ids: &[i64]) -> Result<HashMap<i64, Vec<CaseLesions>>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT result_id, structure, metrics FROM lesion_results
             WHERE result_id IN (SELECT value FROM json_each($1)) ORDER BY result_id, structure",
        )
        .bind(json(&result_ids)?)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let mut by_result: HashMap<i64, Vec<CaseLesions>> = HashMap::new();
        for (result_id, structure, metrics) in rows {
            let metrics = parse(&format!("lesion results of {structure}"), &metrics)?;
            by_result
                .entry(result_id)
                .or_default()
                .push(case_lesions(structure, metrics)?);
        }
        Ok(by_result)
    }

    /// A case: its status, revisions and latest result; None if unknown.
    pub async fn case_view(&self, site: &str, case_key: &str) -> Result<Option<CaseView>> {
        let Some(case_id): Option<i64> =
            sqlx::query_scalar("SELECT id FROM cases WHERE site = $1 AND case_key = $2")
                .bind(site)
                .bind(case_key)
                .fetch_optional(&self.reader)
                .await
                .map_err(classify)?
        else {
            return Ok(None);
        };
        type RevisionRow = (
            String,
            i32,
            String,
            Option<String>,
            Option<String>,
            DateTime<Utc>,
            bool,
        );
        let revisions: Vec<RevisionRow> = sqlx::query_as(
            "SELECT role, revision, format, model, model_version, received_at,
                    NOT EXISTS (SELECT 1 FROM segmentation_contents c WHERE c.segmentation_id = s.id)
             FROM segmentations s WHERE case_id = $1 ORDER BY received_at, role, revision",
        )
        .bind(case_id)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let revisions = revisions
            .into_iter()
            .map(
                |(role, revision, format, model, model_version, received_at, purged)| Revision {
                    role,
                    revision,
                    format,
                    model,
                    model_version,
                    received_at,
                    purged,
                },
            )
            .collect();
        // The latest job of each model version's predictions.
        let jobs: Vec<(i64, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT j.id, p.model, p.model_version, j.status, j.last_error
             FROM jobs j JOIN segmentations p ON p.id = j.prediction_id
             WHERE j.case_id = $1 AND j.id = (SELECT max(k.id) FROM jobs k
                 JOIN segmentations q ON q.id = k.prediction_id
                 WHERE k.case_id = j.case_id AND q.model = p.model AND q.model_version = p.model_version)",
        )
        .bind(case_id)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let jobs = jobs
            .into_iter()
            .map(
                |(id, model, model_version, status, last_error)| VersionJob {
                    id,
                    model,
                    model_version,
                    status,
                    last_error,
                },
            )
            .collect();
        type ResultRow = (i64, String, String, DateTime<Utc>, Option<f64>);
        let rows: Vec<ResultRow> = sqlx::query_as(
            "SELECT id, model, model_version, scored_at, mean_dice FROM results WHERE case_id = $1 AND latest",
        )
        .bind(case_id)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let mut structures = self.structures(&ids, None).await?;
        let mut lesions = self.lesions(&ids).await?;
        let results = rows
            .into_iter()
            .map(
                |(id, model, model_version, scored_at, mean_dice)| LatestResult {
                    id,
                    model,
                    model_version,
                    scored_at,
                    mean_dice,
                    structures: structures.remove(&id).unwrap_or_default(),
                    lesions: lesions.remove(&id).unwrap_or_default(),
                },
            )
            .collect();
        Ok(Some(assemble_case(
            site, case_key, revisions, jobs, results,
        )))
    }

    /// The latest result of each scored case matching `filter`, worst first.
    pub async fn worst_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseSummary>> {
        type Row = (
            i64,
            String,
            String,
            String,
            DateTime<Utc>,
            Option<f64>,
            Option<f64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT r.id, c.case_key, r.model, r.model_version, r.scored_at, r.mean_dice, s.dice
             FROM results r
             JOIN cases c ON c.id = r.case_id
             LEFT JOIN structure_results s ON s.result_id = r.id AND s.structure = $4
             WHERE r.latest AND r.site = $1 AND ($2 IS NULL OR r.model_version = $2)
               AND ($3 IS NULL OR r.scored_at >= $3)
               AND ($6 IS NULL OR json_extract(r.acquisition, '$.scanner_manufacturer') = $6)
               AND ($7 IS NULL OR json_extract(r.acquisition, '$.scanner_model') = $7)
               AND ($8 IS NULL OR json_extract(r.acquisition, '$.protocol') = $8)
               AND ($9 IS NULL OR CAST(json_extract(r.acquisition, '$.slice_thickness_mm') AS REAL) >= $9)
               AND ($10 IS NULL OR CAST(json_extract(r.acquisition, '$.slice_thickness_mm') AS REAL) <= $10)
               AND ($4 IS NULL OR s.result_id IS NOT NULL)
             ORDER BY CASE WHEN $4 IS NULL THEN r.mean_dice ELSE s.dice END ASC NULLS LAST, r.scored_at DESC
             LIMIT $5",
        )
        .bind(&filter.site)
        .bind(&filter.model_version)
        .bind(filter.since.map(at))
        .bind(&filter.structure)
        .bind(filter.limit)
        .bind(&filter.scanner_manufacturer)
        .bind(&filter.scanner_model)
        .bind(&filter.protocol)
        .bind(filter.slice_thickness_mm.0)
        .bind(filter.slice_thickness_mm.1)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let mut structures = self.structures(&ids, filter.structure.as_deref()).await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, case, model, model_version, scored_at, mean_dice, _)| CaseSummary {
                    site: filter.site.clone(),
                    case,
                    model,
                    model_version,
                    scored_at,
                    mean_dice,
                    structures: structures.remove(&id).unwrap_or_default(),
                },
            )
            .collect())
    }
}
