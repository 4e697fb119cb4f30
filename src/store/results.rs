//! Reading cases back: status, revisions, and scored structures for drill-down.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::readers::CaseReaders;
use super::{Result, Store, StoreError, probabilistic};
use crate::metrics::{Counts, Overlap, StructureMetrics, generalized_dice, overlap, volume_errors};
use crate::views::{
    CaseLesions, CaseStatus, CaseSummary, CaseView, Revision, StructureView, VersionView,
};

/// Which scored cases to list, worst first.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub site: String,
    /// Rank by this structure's Dice (else by mean Dice) and show only it.
    pub structure: Option<String>,
    pub model_version: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
    pub scanner_manufacturer: Option<String>,
    pub scanner_model: Option<String>,
    pub protocol: Option<String>,
    /// Inclusive slice-thickness band in mm.
    pub slice_thickness_mm: (Option<f64>, Option<f64>),
}

/// A `structure_results` row, as both backends read it. The rows keep the
/// voxel counts and Dice; the empty side, fp, fn, IoU, precision and recall
/// are derived on read by the engine's own computation ([`Counts::empty`],
/// [`overlap`]), and a NULL name is the structure's. The probabilistic
/// columns are [`probabilistic`]'s.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StructureRow {
    pub result_id: i64,
    pub structure: String,
    pub label: Option<i32>,
    pub code: Option<String>,
    pub name: Option<String>,
    pub pred_voxels: i64,
    pub ref_voxels: i64,
    pub tp: i64,
    pub pred_volume_ml: f64,
    pub ref_volume_ml: f64,
    pub dice: Option<f64>,
    pub hd_mm: Option<f64>,
    pub hd95_mm: Option<f64>,
    pub assd_mm: Option<f64>,
    pub masd_mm: Option<f64>,
    pub nsd: Option<f64>,
    pub soft_dice: Option<f64>,
    pub brier: Option<f64>,
    pub ece: Option<f64>,
    pub reliability: Option<String>,
}

impl StructureRow {
    /// The structure as the API shows it.
    pub(super) fn into_view(mut self) -> Result<StructureView> {
        let columns = (
            self.soft_dice,
            self.brier,
            self.ece,
            self.reliability.take(),
        );
        let probabilistic = probabilistic::read(columns)?;
        Ok(StructureView::new(self.into_metrics(), probabilistic))
    }

    /// The metrics the row was stored from (NULL back to NaN).
    pub(super) fn into_metrics(self) -> StructureMetrics {
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let (volume_error_ml, relative_volume_error) =
            volume_errors(self.pred_volume_ml, self.ref_volume_ml);
        let (pred_voxels, ref_voxels, tp) = (
            self.pred_voxels as u64,
            self.ref_voxels as u64,
            self.tp as u64,
        );
        let counts = Counts {
            pred_voxels,
            ref_voxels,
            tp,
        };
        let Overlap {
            iou,
            precision,
            recall,
            ..
        } = overlap(counts);
        StructureMetrics {
            label: self.label.and_then(|l| u16::try_from(l).ok()),
            code: self.code,
            name: self.name.or(Some(self.structure)),
            empty: counts.empty(),
            pred_voxels,
            ref_voxels,
            tp,
            fp: pred_voxels - tp,
            fn_: ref_voxels - tp,
            pred_volume_ml: self.pred_volume_ml,
            ref_volume_ml: self.ref_volume_ml,
            volume_error_ml,
            relative_volume_error,
            dice: nan(self.dice),
            iou,
            precision,
            recall,
            hd_mm: nan(self.hd_mm),
            hd95_mm: nan(self.hd95_mm),
            assd_mm: nan(self.assd_mm),
            masd_mm: nan(self.masd_mm),
            nsd: nan(self.nsd),
        }
    }
}

/// Structure rows (ordered by result, then position) grouped by result.
pub(super) fn by_result(rows: Vec<StructureRow>) -> Result<HashMap<i64, Vec<StructureView>>> {
    let mut grouped: HashMap<i64, Vec<StructureView>> = HashMap::new();
    for row in rows {
        grouped
            .entry(row.result_id)
            .or_default()
            .push(row.into_view()?);
    }
    Ok(grouped)
}

/// A listed result, before its structures are added.
struct ListedResult {
    id: i64,
    case_key: String,
    model: String,
    model_version: String,
    scored_at: DateTime<Utc>,
    mean_dice: Option<f64>,
}

/// The columns of [`StructureRow`], for the embedded store's queries.
pub(super) const STRUCTURE_COLUMNS: &str = "result_id, structure, label, code, name, pred_voxels, ref_voxels, tp, \
    pred_volume_ml, ref_volume_ml, dice, hd_mm, hd95_mm, assd_mm, masd_mm, nsd, soft_dice, brier, ece, reliability";

impl Store {
    /// The structures of stored results (only `only` if given), in stored
    /// order, by result: one query for a whole listing.
    /// `scored` holds the results' `scored_at`, so that only their month
    /// partitions are read.
    async fn structures(
        pool: &sqlx::PgPool,
        result_ids: &[i64],
        scored: &[DateTime<Utc>],
        only: Option<&str>,
    ) -> Result<HashMap<i64, Vec<StructureView>>> {
        let rows = sqlx::query_as!(
            StructureRow,
            r#"SELECT result_id, structure, label, code, name, pred_voxels, ref_voxels, tp,
                      pred_volume_ml, ref_volume_ml, dice, hd_mm, hd95_mm, assd_mm, masd_mm, nsd,
                      soft_dice, brier, ece, reliability
               FROM structure_results
               WHERE result_id = ANY($1) AND scored_at = ANY($3) AND ($2::text IS NULL OR structure = $2)
               ORDER BY result_id, position"#,
            result_ids,
            only,
            scored
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        by_result(rows)
    }

    /// The lesion-wise structures of stored results, by result: one query
    /// for every version's result of a case (`scored` as for `structures`).
    async fn lesions(
        pool: &sqlx::PgPool,
        result_ids: &[i64],
        scored: &[DateTime<Utc>],
    ) -> Result<HashMap<i64, Vec<CaseLesions>>> {
        let rows = sqlx::query!(
            "SELECT result_id, structure, metrics FROM lesion_results
             WHERE result_id = ANY($1) AND scored_at = ANY($2) ORDER BY result_id, structure",
            result_ids,
            scored
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let mut by_result: HashMap<i64, Vec<CaseLesions>> = HashMap::new();
        for row in rows {
            by_result
                .entry(row.result_id)
                .or_default()
                .push(case_lesions(row.structure, row.metrics)?);
        }
        Ok(by_result)
    }

    /// A case: its status, revisions and latest result; None if unknown.
    pub async fn case_view(&self, site: &str, case_key: &str) -> Result<Option<CaseView>> {
        let pool = postgres_or!(self, lite => lite.case_view(site, case_key));
        let Some(case_id) = sqlx::query_scalar!(
            "SELECT id FROM cases WHERE site = $1 AND case_key = $2",
            site,
            case_key
        )
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)?
        else {
            return Ok(None);
        };
        let revisions = sqlx::query_as!(
            Revision,
            r#"SELECT role, revision, format, model, model_version, reader, received_at,
                      NOT EXISTS (SELECT 1 FROM segmentation_contents c WHERE c.segmentation_id = s.id) AS "purged!"
               FROM segmentations s WHERE case_id = $1 ORDER BY received_at, role, revision"#,
            case_id
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let jobs = sqlx::query_as!(
            VersionJob,
            r#"SELECT DISTINCT ON (p.model, p.model_version)
                      j.id, p.model AS "model!", p.model_version AS "model_version!", j.status, j.last_error
               FROM jobs j JOIN segmentations p ON p.id = j.prediction_id
               WHERE j.case_id = $1 ORDER BY p.model, p.model_version, j.id DESC"#,
            case_id
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let rows = sqlx::query!(
            "SELECT id, model, model_version, scored_at, mean_dice FROM results WHERE case_id = $1 AND latest",
            case_id
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let scored: Vec<DateTime<Utc>> = rows.iter().map(|r| r.scored_at).collect();
        let mut structures = Store::structures(pool, &ids, &scored, None).await?;
        let mut lesions = Store::lesions(pool, &ids, &scored).await?;
        let readers = Store::case_readers(pool, case_id).await?;
        let results = rows
            .into_iter()
            .map(|r| LatestResult {
                id: r.id,
                model: r.model,
                model_version: r.model_version,
                scored_at: r.scored_at,
                mean_dice: r.mean_dice,
                structures: structures.remove(&r.id).unwrap_or_default(),
                lesions: lesions.remove(&r.id).unwrap_or_default(),
            })
            .collect();
        Ok(Some(assemble_case(
            site, case_key, revisions, jobs, results, readers,
        )))
    }

    /// The latest result of each scored case (if it matches `filter`), worst first.
    pub async fn worst_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseSummary>> {
        let pool = postgres_or!(self, lite => lite.worst_cases(filter));
        // One query per order, each walking an index of one site's results in
        // Dice order up to the limit: `results_latest_site` by mean Dice,
        // `structure_results_site` by a structure (on the structure rows' copy
        // of the site; the few results that are no longer their case's latest
        // are skipped on the join). Case keys are joined to the page only. The
        // join is on the result id alone (as in `case_structure_results`): with
        // `scored_at` too, PostgreSQL expects a few rows and sorts them all.
        let rows = match &filter.structure {
            None => sqlx::query_as!(
                ListedResult,
                r#"SELECT r.id AS "id!", c.case_key, r.model AS "model!", r.model_version AS "model_version!",
                          r.scored_at AS "scored_at!", r.mean_dice
                   FROM (SELECT * FROM results r
                         WHERE r.latest AND r.site = $1 AND ($2::text IS NULL OR r.model_version = $2)
                           AND ($3::timestamptz IS NULL OR r.scored_at >= $3)
                           AND ($5::text IS NULL OR r.acquisition->>'scanner_manufacturer' = $5)
                           AND ($6::text IS NULL OR r.acquisition->>'scanner_model' = $6)
                           AND ($7::text IS NULL OR r.acquisition->>'protocol' = $7)
                           AND ($8::float8 IS NULL OR (r.acquisition->>'slice_thickness_mm')::float8 >= $8)
                           AND ($9::float8 IS NULL OR (r.acquisition->>'slice_thickness_mm')::float8 <= $9)
                         ORDER BY r.mean_dice ASC NULLS LAST, r.scored_at DESC LIMIT $4) r
                   JOIN cases c ON c.id = r.case_id
                   ORDER BY r.mean_dice ASC NULLS LAST, r.scored_at DESC"#,
                filter.site,
                filter.model_version,
                filter.since,
                filter.limit,
                filter.scanner_manufacturer,
                filter.scanner_model,
                filter.protocol,
                filter.slice_thickness_mm.0,
                filter.slice_thickness_mm.1
            )
            .fetch_all(pool)
            .await,
            Some(structure) => sqlx::query_as!(
                ListedResult,
                r#"SELECT r.id AS "id!", c.case_key, r.model AS "model!", r.model_version AS "model_version!",
                          r.scored_at AS "scored_at!", r.mean_dice
                   FROM (SELECT r.*, s.dice FROM structure_results s JOIN results r ON r.id = s.result_id
                         WHERE s.structure = $10 AND s.site = $1 AND r.latest
                           AND ($2::text IS NULL OR r.model_version = $2)
                           AND ($3::timestamptz IS NULL OR r.scored_at >= $3)
                           AND ($5::text IS NULL OR r.acquisition->>'scanner_manufacturer' = $5)
                           AND ($6::text IS NULL OR r.acquisition->>'scanner_model' = $6)
                           AND ($7::text IS NULL OR r.acquisition->>'protocol' = $7)
                           AND ($8::float8 IS NULL OR (r.acquisition->>'slice_thickness_mm')::float8 >= $8)
                           AND ($9::float8 IS NULL OR (r.acquisition->>'slice_thickness_mm')::float8 <= $9)
                         ORDER BY s.dice ASC NULLS LAST, r.scored_at DESC LIMIT $4) r
                   JOIN cases c ON c.id = r.case_id
                   ORDER BY r.dice ASC NULLS LAST, r.scored_at DESC"#,
                filter.site,
                filter.model_version,
                filter.since,
                filter.limit,
                filter.scanner_manufacturer,
                filter.scanner_model,
                filter.protocol,
                filter.slice_thickness_mm.0,
                filter.slice_thickness_mm.1,
                structure
            )
            .fetch_all(pool)
            .await,
        }
        .map_err(StoreError::classify)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let scored: Vec<DateTime<Utc>> = rows.iter().map(|r| r.scored_at).collect();
        let mut structures =
            Store::structures(pool, &ids, &scored, filter.structure.as_deref()).await?;
        Ok(rows
            .into_iter()
            .map(|r| CaseSummary {
                site: filter.site.clone(),
                case: r.case_key,
                model: r.model,
                model_version: r.model_version,
                scored_at: r.scored_at,
                mean_dice: r.mean_dice,
                structures: structures.remove(&r.id).unwrap_or_default(),
            })
            .collect())
    }
}

/// A stored lesion-wise structure, its metrics a JSON object.
pub(super) fn case_lesions(structure: String, metrics: serde_json::Value) -> Result<CaseLesions> {
    match metrics {
        serde_json::Value::Object(metrics) => Ok(CaseLesions { structure, metrics }),
        _ => Err(StoreError::Corrupt(format!(
            "lesion results of {structure} are not a JSON object"
        ))),
    }
}

/// A model version's latest result of a case, as the case's view shows it.
pub(super) struct LatestResult {
    /// The result's id: the highest is the case's latest result.
    pub id: i64,
    pub model: String,
    pub model_version: String,
    pub scored_at: DateTime<Utc>,
    pub mean_dice: Option<f64>,
    pub structures: Vec<StructureView>,
    pub lesions: Vec<CaseLesions>,
}

/// The generalized Dice score of a result's structures.
fn case_generalized_dice(structures: &[StructureView]) -> Option<f64> {
    let metrics: Vec<StructureMetrics> = structures.iter().map(|s| s.metrics.clone()).collect();
    generalized_dice(&metrics)
}

/// The latest job of a model version's predictions in a case.
pub(super) struct VersionJob {
    pub id: i64,
    pub model: String,
    pub model_version: String,
    pub status: String,
    pub last_error: Option<String>,
}

/// Where a job leaves a case or version; `predicted` when no job exists yet.
fn job_status(job: Option<&VersionJob>, predicted: bool) -> (CaseStatus, Option<String>) {
    match job {
        Some(j) if j.status == "done" => (CaseStatus::Scored, None),
        Some(j) if j.status == "failed" => (CaseStatus::Failed, j.last_error.clone()),
        Some(j) => (CaseStatus::Queued, j.last_error.clone()),
        None if predicted => (CaseStatus::WaitingForReference, None),
        None => (CaseStatus::WaitingForPrediction, None),
    }
}

/// A case from its rows: revisions in received order, the latest job and the
/// latest result and readers' agreement of each model version. The case's own
/// status and result are its newest job's and newest result's.
pub(super) fn assemble_case(
    site: &str,
    case_key: &str,
    revisions: Vec<Revision>,
    jobs: Vec<VersionJob>,
    mut results: Vec<LatestResult>,
    mut readers: CaseReaders,
) -> CaseView {
    let has_prediction = revisions.iter().any(|r| r.role == "prediction");
    let (status, reason) = job_status(jobs.iter().max_by_key(|j| j.id), has_prediction);
    let mut versions: Vec<VersionView> = Vec::new();
    for p in revisions.iter().filter(|r| r.role == "prediction") {
        let (Some(model), Some(version)) = (&p.model, &p.model_version) else {
            continue;
        };
        let same = |m: &String, v: &String| m == model && v == version;
        match versions
            .iter_mut()
            .find(|v| same(&v.model, &v.model_version))
        {
            Some(v) => v.revision = v.revision.max(p.revision),
            None => {
                let job = jobs.iter().find(|j| same(&j.model, &j.model_version));
                let (status, reason) = job_status(job, true);
                let result = results.iter().find(|r| same(&r.model, &r.model_version));
                versions.push(VersionView {
                    model: model.clone(),
                    model_version: version.clone(),
                    revision: p.revision,
                    status,
                    reason,
                    scored_at: result.map(|r| r.scored_at),
                    mean_dice: result.and_then(|r| r.mean_dice),
                    generalized_dice: result.and_then(|r| case_generalized_dice(&r.structures)),
                    structures: result.map(|r| r.structures.clone()).unwrap_or_default(),
                    lesions: result.map(|r| r.lesions.clone()).unwrap_or_default(),
                    readers: readers
                        .remove(&(model.clone(), version.clone()))
                        .unwrap_or_default(),
                });
            }
        }
    }
    versions.sort_by(|a, b| (&a.model, &a.model_version).cmp(&(&b.model, &b.model_version)));
    let prediction = revisions.iter().rev().find(|r| r.role == "prediction");
    results.sort_by_key(|r| r.id);
    let (scored_at, mean_dice, structures, lesions) = match results.pop() {
        Some(r) => (Some(r.scored_at), r.mean_dice, r.structures, r.lesions),
        None => (None, None, Vec::new(), Vec::new()),
    };
    CaseView {
        site: site.to_owned(),
        case: case_key.to_owned(),
        status,
        reason,
        model: prediction.and_then(|p| p.model.clone()),
        model_version: prediction.and_then(|p| p.model_version.clone()),
        scored_at,
        mean_dice,
        generalized_dice: scored_at.and(case_generalized_dice(&structures)),
        structures,
        lesions,
        versions,
        revisions,
    }
}

#[cfg(test)]
mod tests {
    use super::StructureRow;
    use crate::metrics::probabilistic::{Probabilistic, SoftTally};
    use crate::metrics::surface::Surface;
    use crate::metrics::{Counts, Settings, StructureMetrics, score_structure};
    use crate::store::jobs::{finite, stored_name};
    use crate::store::probabilistic;
    use crate::volume::Grid;

    /// The row the worker stores for `m`, as `complete_job` binds it.
    fn stored(structure: &str, m: &StructureMetrics, p: Option<&Probabilistic>) -> StructureRow {
        let (soft_dice, brier, ece, reliability) = probabilistic::columns(p).unwrap();
        StructureRow {
            result_id: 1,
            structure: structure.to_owned(),
            label: m.label.map(i32::from),
            code: m.code.clone(),
            name: stored_name(m.name.as_deref(), structure).map(str::to_owned),
            pred_voxels: m.pred_voxels as i64,
            ref_voxels: m.ref_voxels as i64,
            tp: m.tp as i64,
            pred_volume_ml: m.pred_volume_ml,
            ref_volume_ml: m.ref_volume_ml,
            dice: finite(m.dice),
            hd_mm: finite(m.hd_mm),
            hd95_mm: finite(m.hd95_mm),
            assd_mm: finite(m.assd_mm),
            masd_mm: finite(m.masd_mm),
            nsd: finite(m.nsd),
            soft_dice,
            brier,
            ece,
            reliability,
        }
    }

    /// Every f64 of the metrics, by its bits (NaN equal to NaN).
    fn bits(m: &StructureMetrics) -> Vec<u64> {
        [
            m.pred_volume_ml,
            m.ref_volume_ml,
            m.volume_error_ml,
            m.relative_volume_error,
            m.dice,
            m.iou,
            m.precision,
            m.recall,
        ]
        .map(f64::to_bits)
        .to_vec()
    }

    #[test]
    fn structure_rows_read_back_the_metrics_they_were_stored_from_bit_for_bit() {
        let grid = Grid::axis_aligned([8, 8, 8], [0.8, 0.8, 1.5], 3);
        let none = Surface::default();
        // Overlapping, one side empty each way, both empty, and ratios with
        // no exact binary value.
        for (pred_voxels, ref_voxels, tp) in [
            (3, 4, 2),
            (0, 5, 0),
            (5, 0, 0),
            (0, 0, 0),
            (7, 9, 6),
            (100_003, 99_991, 77_777),
        ] {
            let counts = Counts {
                pred_voxels,
                ref_voxels,
                tp,
            };
            for name in [Some("liver"), Some("Liver"), None] {
                let scored = StructureMetrics {
                    name: name.map(str::to_owned),
                    ..score_structure(counts, &none, &none, &grid, &Settings::default())
                };
                let read = stored("liver", &scored, None).into_metrics();
                let what = format!("{counts:?} {name:?}");
                assert_eq!(bits(&read), bits(&scored), "{what}");
                assert_eq!(
                    (read.empty, read.fp, read.fn_),
                    (scored.empty, scored.fp, scored.fn_),
                    "{what}"
                );
                // A missing name reads as the structure's, as it always has.
                assert_eq!(
                    read.name.as_deref(),
                    Some(name.unwrap_or("liver")),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn probabilistic_columns_read_back_the_scores_bit_for_bit() {
        let grid = Grid::axis_aligned([4, 4, 4], [1.0; 3], 3);
        let m = score_structure(
            Counts {
                pred_voxels: 3,
                ref_voxels: 4,
                tp: 2,
            },
            &Surface::default(),
            &Surface::default(),
            &grid,
            &Settings::default(),
        );
        // Probabilities k/255 (as an 8-bit FRACTIONAL SEG stores them) and
        // thirds: sums and means with no exact binary value, empty bins, p = 1.
        let mut tally = SoftTally::new(15).unwrap();
        for (i, p) in [1.0 / 3.0, 2.0 / 3.0, 17.0 / 255.0, 254.0 / 255.0, 1.0, 0.1]
            .into_iter()
            .enumerate()
        {
            tally.add(p, i % 2 == 0).unwrap();
        }
        let scores = tally.finish(64, 5).unwrap();
        let row = stored("liver", &m, Some(&scores));
        assert!(row.reliability.as_ref().unwrap().len() < 400, "compact");
        let view = row.into_view().unwrap();
        assert_eq!(view.soft_dice, Some(scores.soft_dice));
        assert_eq!(view.brier, Some(scores.brier));
        assert_eq!(view.ece, Some(scores.ece));
        assert_eq!(view.ece_bins, Some(15));
        assert_eq!(view.reliability.as_ref(), Some(&scores.reliability));
        // Without probabilities every column is NULL, and reads back null.
        let plain = stored("liver", &m, None);
        assert_eq!(
            (
                plain.soft_dice,
                plain.brier,
                plain.ece,
                plain.reliability.is_some()
            ),
            (None, None, None, false)
        );
        let view = plain.into_view().unwrap();
        assert_eq!((view.soft_dice, view.ece_bins), (None, None));
        assert!(view.reliability.is_none());
        let read: Option<Probabilistic> =
            probabilistic::read(probabilistic::columns(Some(&scores)).unwrap()).unwrap();
        assert_eq!(read, Some(scores));
    }
}
