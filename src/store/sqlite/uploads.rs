//! Storing uploads, and enqueueing a pair in the same transaction.

use sqlx::SqliteConnection;

use super::{Lite, at, classify, days_ago, json, now, parse};
use crate::store::uploads::{
    ModelBoundExceeded, ModelBounds, NewSegmentation, PartnerGrid, SegRole, Source, StoredUpload,
};
use crate::store::{Result, StoredProbabilities};

impl Lite {
    /// The revision holding these bytes (of this model version, for a
    /// prediction) or this DICOM instance, of a case's role.
    pub async fn find_revision(
        &self,
        site: &str,
        case_key: &str,
        role: SegRole,
        source: Source<'_>,
        sha256: Option<&[u8]>,
        sop_instance_uid: Option<&str>,
    ) -> Result<Option<i32>> {
        let (model, model_version) = source.version.unzip();
        sqlx::query_scalar(
            "SELECT s.revision FROM segmentations s JOIN cases c ON c.id = s.case_id
             WHERE c.site = $1 AND c.case_key = $2 AND s.role = $3
               AND ((s.sha256 = $4 AND s.model IS $6 AND s.model_version IS $7 AND s.reader IS $8)
                    OR s.sop_instance_uid = $5)",
        )
        .bind(site)
        .bind(case_key)
        .bind(role.as_str())
        .bind(sha256)
        .bind(sop_instance_uid)
        .bind(model)
        .bind(model_version)
        .bind(source.reader)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)
    }

    /// See [`crate::store::Store::latest`].
    pub async fn latest(
        &self,
        site: &str,
        case_key: &str,
        role: SegRole,
        besides: Option<(&str, &str)>,
    ) -> Result<Option<PartnerGrid>> {
        let (model, model_version) = besides.unzip();
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT s.grid, s.structures FROM segmentations s JOIN cases c ON c.id = s.case_id
             WHERE c.site = $1 AND c.case_key = $2 AND s.role = $3
               AND ($4 IS NULL OR NOT (s.model = $4 AND s.model_version = $5))
             ORDER BY s.revision DESC LIMIT 1",
        )
        .bind(site)
        .bind(case_key)
        .bind(role.as_str())
        .bind(model)
        .bind(model_version)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        row.map(|(grid, structures)| {
            Ok(PartnerGrid {
                grid: parse("grid", &grid)?,
                structures: parse("structures", &structures)?,
            })
        })
        .transpose()
    }

    /// The model versions with a prediction for a case, in order.
    pub async fn prediction_versions(
        &self,
        site: &str,
        case_key: &str,
    ) -> Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT DISTINCT s.model, s.model_version FROM segmentations s JOIN cases c ON c.id = s.case_id
             WHERE c.site = $1 AND c.case_key = $2 AND s.role = 'prediction'
             ORDER BY 1, 2",
        )
        .bind(site)
        .bind(case_key)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    /// Jobs waiting or running.
    pub async fn queue_depth(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
            .fetch_one(&self.reader)
            .await
            .map_err(classify)
    }

    /// See [`crate::store::Store::store_upload`].
    pub async fn store_upload(
        &self,
        new: &NewSegmentation,
        bounds: ModelBounds,
    ) -> Result<std::result::Result<StoredUpload, ModelBoundExceeded>> {
        let mut tx = self.begin().await?;
        if let (Some(model), Some(version)) = (&new.model, &new.model_version)
            && let Some(exceeded) = check_model_bounds(&mut tx, model, version, bounds).await?
        {
            return Ok(Err(exceeded));
        }
        let received = now();
        let case_id: i64 = sqlx::query_scalar(
            "INSERT INTO cases (site, case_key, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (site, case_key) DO UPDATE SET site = excluded.site RETURNING id",
        )
        .bind(&new.site)
        .bind(&new.case_key)
        .bind(&received)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let existing: Option<i32> = sqlx::query_scalar(
            "SELECT revision FROM segmentations WHERE case_id = $1 AND role = $2
             AND ((sha256 = $3 AND model IS $5 AND model_version IS $6 AND reader IS $7)
                  OR sop_instance_uid = $4)",
        )
        .bind(case_id)
        .bind(new.role.as_str())
        .bind(&new.sha256)
        .bind(&new.sop_instance_uid)
        .bind(&new.model)
        .bind(&new.model_version)
        .bind(&new.reader)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        if let Some(revision) = existing {
            tx.commit().await.map_err(classify)?;
            return Ok(Ok(StoredUpload {
                revision,
                duplicate: true,
                job_ids: Vec::new(),
            }));
        }
        let revision: i32 = sqlx::query_scalar(
            "SELECT coalesce(max(revision), 0) + 1 FROM segmentations WHERE case_id = $1 AND role = $2",
        )
        .bind(case_id)
        .bind(new.role.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO segmentations (case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                        model, model_version, acquisition, provenance, observed_at, received_at,
                                        sop_instance_uid, structures, reader)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             RETURNING id",
        )
        .bind(case_id)
        .bind(new.role.as_str())
        .bind(revision)
        .bind(&new.sha256)
        .bind(new.format)
        .bind(new.content.len() as i64)
        .bind(new.voxels)
        .bind(json(&new.grid)?)
        .bind(&new.model)
        .bind(&new.model_version)
        .bind(json(&new.acquisition)?)
        .bind(new.provenance.as_ref().map(json).transpose()?)
        .bind(new.observed_at.map_or_else(|| received.clone(), at))
        .bind(&received)
        .bind(&new.sop_instance_uid)
        .bind(json(&new.structures)?)
        .bind(&new.reader)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let probabilities = new.probabilities.as_ref();
        sqlx::query(
            "INSERT INTO segmentation_contents (segmentation_id, received_at, content, probabilities, probability_labels)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&received)
        .bind(&new.content)
        .bind(probabilities.map(|p| p.content.as_slice()))
        .bind(probabilities.map(StoredProbabilities::labels_text))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        // A prediction pairs with the primary reader's latest reference; a
        // reference (of any reader) with the latest prediction of each model
        // version (shadow mode).
        type Partner = (i64, Option<String>, Option<String>, String);
        let partners: Vec<Partner> = sqlx::query_as(
            "SELECT id, model, model_version, structures FROM segmentations s
             WHERE case_id = $1 AND role = $2
               AND revision = (SELECT max(revision) FROM segmentations t
                               WHERE t.case_id = s.case_id AND t.role = s.role
                                 AND t.model IS s.model AND t.model_version IS s.model_version
                                 AND t.reader IS s.reader)
               AND (role = 'prediction' OR reader = (SELECT f.reader FROM segmentations f
                    WHERE f.case_id = s.case_id AND f.role = 'reference' ORDER BY f.revision LIMIT 1))
             ORDER BY model, model_version",
        )
        .bind(case_id)
        .bind(new.role.other().as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        let mut job_ids = Vec::with_capacity(partners.len());
        for (partner_id, partner_model, partner_version, partner_structures) in partners {
            let (prediction, reference) = match new.role {
                SegRole::Prediction => (id, partner_id),
                SegRole::Reference => (partner_id, id),
            };
            let (model, version) = match new.role {
                SegRole::Prediction => (new.model.clone(), new.model_version.clone()),
                SegRole::Reference => (partner_model, partner_version),
            };
            if let (Some(model), Some(version)) = (model, version) {
                let mut pair: Vec<String> = parse("structures", &partner_structures)?;
                pair.extend(new.structures.iter().cloned());
                if let Some(exceeded) =
                    gather_structures(&mut tx, &model, &version, pair, bounds.structures).await?
                {
                    return Ok(Err(exceeded));
                }
            }
            let job: Option<i64> = sqlx::query_scalar(
                "INSERT INTO jobs (case_id, prediction_id, reference_id, run_after, created_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (prediction_id, reference_id) DO NOTHING RETURNING id",
            )
            .bind(case_id)
            .bind(prediction)
            .bind(reference)
            .bind(&received)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
            job_ids.extend(job);
        }
        sqlx::query(
            "INSERT INTO site_uploads (site, role, last_received_at) VALUES ($1, $2, $3)
             ON CONFLICT (site, role) DO UPDATE
             SET last_received_at = max(last_received_at, excluded.last_received_at)",
        )
        .bind(&new.site)
        .bind(new.role.as_str())
        .bind(&received)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        if !job_ids.is_empty() {
            self.jobs.notify_waiters();
        }
        Ok(Ok(StoredUpload {
            revision,
            duplicate: false,
            job_ids,
        }))
    }
}

/// Refuses a model or version that is not active yet when it would pass a
/// bound (the write lock serialises the check).
async fn check_model_bounds(
    tx: &mut SqliteConnection,
    model: &str,
    version: &str,
    bounds: ModelBounds,
) -> Result<Option<ModelBoundExceeded>> {
    let since = days_ago(bounds.active_days);
    let (other_models, versions, this_version): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT CASE WHEN model <> $1 THEN model END),
                count(DISTINCT CASE WHEN model = $1 THEN model_version END),
                count(CASE WHEN model = $1 AND model_version = $2 THEN 1 END)
         FROM segmentations WHERE role = 'prediction' AND received_at > $3",
    )
    .bind(model)
    .bind(version)
    .bind(&since)
    .fetch_one(&mut *tx)
    .await
    .map_err(classify)?;
    // An active version passes; this model counts once whether active or not.
    Ok(if this_version > 0 {
        None
    } else if other_models >= i64::from(bounds.models) {
        Some(ModelBoundExceeded::Models {
            limit: bounds.models,
        })
    } else if versions >= i64::from(bounds.versions) {
        Some(ModelBoundExceeded::Versions {
            limit: bounds.versions,
        })
    } else {
        None
    })
}

/// Adds a pair's structures to those its model version has gathered, unless
/// that would pass `limit`.
async fn gather_structures(
    tx: &mut SqliteConnection,
    model: &str,
    version: &str,
    mut structures: Vec<String>,
    limit: u32,
) -> Result<Option<ModelBoundExceeded>> {
    structures.sort();
    structures.dedup();
    let added: Vec<String> = sqlx::query_scalar(
        "SELECT s.value FROM json_each($3) AS s WHERE NOT EXISTS (
             SELECT 1 FROM version_structures WHERE model = $1 AND model_version = $2 AND structure = s.value)",
    )
    .bind(model)
    .bind(version)
    .bind(json(&structures)?)
    .fetch_all(&mut *tx)
    .await
    .map_err(classify)?;
    if added.is_empty() {
        return Ok(None);
    }
    let gathered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM version_structures WHERE model = $1 AND model_version = $2",
    )
    .bind(model)
    .bind(version)
    .fetch_one(&mut *tx)
    .await
    .map_err(classify)?;
    if gathered + added.len() as i64 > i64::from(limit) {
        return Ok(Some(ModelBoundExceeded::Structures { limit }));
    }
    sqlx::query(
        "INSERT INTO version_structures (model, model_version, structure)
         SELECT $1, $2, value FROM json_each($3) WHERE true ON CONFLICT DO NOTHING",
    )
    .bind(model)
    .bind(version)
    .bind(json(&added)?)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    Ok(None)
}
