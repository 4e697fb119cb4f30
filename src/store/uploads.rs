//! Storing uploads, and enqueueing a job in the same transaction when an upload
//! completes a prediction/reference pair.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JOBS_CHANNEL, Result, Store, StoreError, StoredProbabilities, partitions};

/// Which side of a case a segmentation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegRole {
    Prediction,
    Reference,
}

impl SegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SegRole::Prediction => "prediction",
            SegRole::Reference => "reference",
        }
    }

    /// The partner side.
    pub fn other(self) -> SegRole {
        match self {
            SegRole::Prediction => SegRole::Reference,
            SegRole::Reference => SegRole::Prediction,
        }
    }
}

/// A validated upload, ready to store.
#[derive(Debug, Clone)]
pub struct NewSegmentation {
    pub site: String,
    pub case_key: String,
    pub role: SegRole,
    pub sha256: Vec<u8>,
    /// `nifti` or `dicom_seg`.
    pub format: &'static str,
    /// The upload, gzip-compressed.
    pub content: Vec<u8>,
    pub voxels: i64,
    /// The decoded grid (shape, spacing, affine, dims) and how it was stored.
    pub grid: Value,
    pub model: Option<String>,
    pub model_version: Option<String>,
    /// Pseudonym of a reference's reader; `None` for a prediction.
    pub reader: Option<String>,
    pub acquisition: Value,
    pub provenance: Option<Value>,
    /// When the case happened; now unless an admin says otherwise.
    pub observed_at: Option<DateTime<Utc>>,
    /// DICOM SOPInstanceUID, for idempotent DICOMweb uploads.
    pub sop_instance_uid: Option<String>,
    /// Keys of the structures it holds ([`crate::volume::Segmentation::structure_keys`]).
    pub structures: Vec<String>,
    /// A prediction's probabilities, sent with it as a float NIfTI.
    pub probabilities: Option<StoredProbabilities>,
}

/// What storing an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    pub revision: i32,
    /// The same bytes were already stored; nothing changed.
    pub duplicate: bool,
    /// The jobs this upload enqueued: one per pair it completed (a reference
    /// completes one per model version with a prediction for the case).
    pub job_ids: Vec<i64>,
}

/// The other side's latest segmentation, which an upload pairs with.
struct Partner {
    id: i64,
    model: Option<String>,
    model_version: Option<String>,
    structures: Vec<String>,
}

/// How many models, and versions of one model, may be active: with a
/// prediction received in the last `active_days` days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelBounds {
    pub models: u32,
    pub versions: u32,
    pub active_days: u32,
    /// Structures a model version may gather through scored pairs.
    pub structures: u32,
}

/// A prediction refused because its model or version would pass a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelBoundExceeded {
    /// The model would be one more active model than `limit`.
    Models { limit: u32 },
    /// The version would be one more active version of its model than `limit`.
    Versions { limit: u32 },
    /// The pair would bring its model version past `limit` structures.
    Structures { limit: u32 },
}

/// The latest segmentation on the other side of a case.
#[derive(Debug, Clone)]
pub struct PartnerGrid {
    pub grid: Value,
    /// Keys of the structures it holds.
    pub structures: Vec<String>,
}

/// Who produced an upload: a prediction's model version, a reference's reader.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source<'a> {
    /// Model and version of a prediction.
    pub version: Option<(&'a str, &'a str)>,
    /// Reader pseudonym of a reference.
    pub reader: Option<&'a str>,
}

impl Store {
    /// The revision already holding these exact bytes, if any: for a
    /// prediction, from the same model version (shadow versions may predict
    /// the same bytes, and each is scored); for a reference, from the same reader.
    pub async fn find_duplicate(
        &self,
        site: &str,
        case_key: &str,
        role: SegRole,
        source: Source<'_>,
        sha256: &[u8],
    ) -> Result<Option<i32>> {
        let pool = postgres_or!(self, lite => lite.find_revision(site, case_key, role, source, Some(sha256), None));
        let (model, model_version) = source.version.unzip();
        sqlx::query_scalar!(
            "SELECT s.revision FROM segmentations s JOIN cases c ON c.id = s.case_id
             WHERE c.site = $1 AND c.case_key = $2 AND s.role = $3 AND s.sha256 = $4
               AND s.model IS NOT DISTINCT FROM $5 AND s.model_version IS NOT DISTINCT FROM $6
               AND s.reader IS NOT DISTINCT FROM $7",
            site,
            case_key,
            role.as_str(),
            sha256,
            model,
            model_version,
            source.reader
        )
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)
    }

    /// The revision already holding this DICOM instance, if any.
    pub async fn find_instance(
        &self,
        site: &str,
        case_key: &str,
        role: SegRole,
        sop_instance_uid: &str,
    ) -> Result<Option<i32>> {
        let pool = postgres_or!(self, lite => lite.find_revision(site, case_key, role, Source::default(), None, Some(sop_instance_uid)));
        sqlx::query_scalar!(
            "SELECT s.revision FROM segmentations s JOIN cases c ON c.id = s.case_id
             WHERE c.site = $1 AND c.case_key = $2 AND s.role = $3 AND s.sop_instance_uid = $4",
            site,
            case_key,
            role.as_str(),
            sop_instance_uid
        )
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)
    }

    /// The latest segmentation of `role` in a case, besides those of one model
    /// version when `besides` names it.
    pub async fn latest(
        &self,
        site: &str,
        case_key: &str,
        role: SegRole,
        besides: Option<(&str, &str)>,
    ) -> Result<Option<PartnerGrid>> {
        let pool = postgres_or!(self, lite => lite.latest(site, case_key, role, besides));
        let (model, model_version) = besides.unzip();
        let row = sqlx::query!(
            "SELECT s.grid, s.structures FROM segmentations s JOIN cases c ON c.id = s.case_id
             WHERE c.site = $1 AND c.case_key = $2 AND s.role = $3
               AND ($4::text IS NULL OR NOT (s.model = $4 AND s.model_version = $5))
             ORDER BY s.revision DESC LIMIT 1",
            site,
            case_key,
            role.as_str(),
            model,
            model_version
        )
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(row.map(|r| PartnerGrid {
            grid: r.grid,
            structures: r.structures,
        }))
    }

    /// The model versions with a prediction for a case, in order.
    pub async fn prediction_versions(
        &self,
        site: &str,
        case_key: &str,
    ) -> Result<Vec<(String, String)>> {
        let pool = postgres_or!(self, lite => lite.prediction_versions(site, case_key));
        let rows = sqlx::query!(
            r#"SELECT DISTINCT s.model AS "model!", s.model_version AS "model_version!"
               FROM segmentations s JOIN cases c ON c.id = s.case_id
               WHERE c.site = $1 AND c.case_key = $2 AND s.role = 'prediction'
               ORDER BY 1, 2"#,
            site,
            case_key
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.model, r.model_version))
            .collect())
    }

    /// Jobs waiting or running.
    pub async fn queue_depth(&self) -> Result<i64> {
        let pool = postgres_or!(self, lite => lite.queue_depth());
        let depth =
            sqlx::query_scalar!("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
                .fetch_one(pool)
                .await
                .map_err(StoreError::classify)?;
        Ok(depth.unwrap_or(0))
    }

    /// Stores an upload as the case's next revision of its role and, when the
    /// case has the other side too, enqueues the pair, all in one transaction.
    /// Identical bytes already stored for the role change nothing. A
    /// prediction of a model or version that is not active yet is refused when
    /// it would pass `bounds`.
    pub async fn store_upload(
        &self,
        new: &NewSegmentation,
        bounds: ModelBounds,
    ) -> Result<std::result::Result<StoredUpload, ModelBoundExceeded>> {
        let pool = postgres_or!(self, lite => lite.store_upload(new, bounds));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        partitions::share_case_activity(&mut tx).await?;
        if let (Some(model), Some(version)) = (&new.model, &new.model_version)
            && let Some(exceeded) = check_model_bounds(&mut tx, model, version, bounds).await?
        {
            return Ok(Err(exceeded));
        }
        let case_id = sqlx::query_scalar!(
            "INSERT INTO cases (site, case_key) VALUES ($1, $2)
             ON CONFLICT (site, case_key) DO UPDATE SET site = EXCLUDED.site RETURNING id",
            new.site,
            new.case_key
        )
        .fetch_one(&mut *tx)
        .await?;
        // Uploads to one case are serialised by this row lock.
        sqlx::query!("SELECT id FROM cases WHERE id = $1 FOR UPDATE", case_id)
            .fetch_one(&mut *tx)
            .await?;
        let existing = sqlx::query_scalar!(
            "SELECT revision FROM segmentations WHERE case_id = $1 AND role = $2
             AND ((sha256 = $3 AND model IS NOT DISTINCT FROM $5 AND model_version IS NOT DISTINCT FROM $6
                   AND reader IS NOT DISTINCT FROM $7)
                  OR sop_instance_uid = $4)",
            case_id,
            new.role.as_str(),
            new.sha256,
            new.sop_instance_uid,
            new.model,
            new.model_version,
            new.reader
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(revision) = existing {
            tx.commit().await?;
            return Ok(Ok(StoredUpload {
                revision,
                duplicate: true,
                job_ids: Vec::new(),
            }));
        }
        let revision = sqlx::query_scalar!(
            "SELECT coalesce(max(revision), 0) + 1 FROM segmentations WHERE case_id = $1 AND role = $2",
            case_id,
            new.role.as_str()
        )
        .fetch_one(&mut *tx)
        .await?
        .unwrap_or(1);
        let id = sqlx::query_scalar!(
            "INSERT INTO segmentations (case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                        model, model_version, acquisition, provenance, observed_at, sop_instance_uid,
                                        structures, reader)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()), $14, $15, $16)
             RETURNING id",
            case_id,
            new.role.as_str(),
            revision,
            new.sha256,
            new.format,
            new.content.len() as i64,
            new.voxels,
            new.grid,
            new.model,
            new.model_version,
            new.acquisition,
            new.provenance,
            new.observed_at,
            new.sop_instance_uid,
            &new.structures,
            new.reader
        )
        .fetch_one(&mut *tx)
        .await?;
        let probabilities = new.probabilities.as_ref();
        sqlx::query!(
            "INSERT INTO segmentation_contents (segmentation_id, received_at, content, probabilities, probability_labels)
             VALUES ($1, now(), $2, $3, $4)",
            id,
            new.content,
            probabilities.map(|p| p.content.as_slice()),
            probabilities.map(StoredProbabilities::labels_text)
        )
        .execute(&mut *tx)
        .await?;
        // A prediction pairs with the primary reader's (the reader of the
        // case's first reference) latest reference; a reference (of any
        // reader) with the latest prediction of each model version (shadow
        // mode).
        let partners = sqlx::query_as!(
            Partner,
            "SELECT DISTINCT ON (model, model_version) id, model, model_version, structures
             FROM segmentations s WHERE case_id = $1 AND role = $2
               AND (role = 'prediction' OR reader = (SELECT f.reader FROM segmentations f
                    WHERE f.case_id = s.case_id AND f.role = 'reference' ORDER BY f.revision LIMIT 1))
             ORDER BY model, model_version, revision DESC",
            case_id,
            new.role.other().as_str()
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut job_ids = Vec::with_capacity(partners.len());
        for partner in partners {
            let (prediction, reference) = match new.role {
                SegRole::Prediction => (id, partner.id),
                SegRole::Reference => (partner.id, id),
            };
            let (model, version) = match new.role {
                SegRole::Prediction => (new.model.clone(), new.model_version.clone()),
                SegRole::Reference => (partner.model, partner.model_version),
            };
            if let (Some(model), Some(version)) = (model, version) {
                let mut pair = partner.structures;
                pair.extend(new.structures.iter().cloned());
                if let Some(exceeded) =
                    gather_structures(&mut tx, &model, &version, pair, bounds.structures).await?
                {
                    return Ok(Err(exceeded));
                }
            }
            let job = sqlx::query_scalar!(
                "INSERT INTO jobs (case_id, prediction_id, reference_id) VALUES ($1, $2, $3)
                 ON CONFLICT (prediction_id, reference_id) DO NOTHING RETURNING id",
                case_id,
                prediction,
                reference
            )
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(job) = job {
                sqlx::query!("SELECT pg_notify($1, $2)", JOBS_CHANNEL, job.to_string())
                    .execute(&mut *tx)
                    .await?;
                job_ids.push(job);
            }
        }
        sqlx::query!(
            "INSERT INTO site_uploads (site, role, last_received_at) VALUES ($1, $2, now())
             ON CONFLICT (site, role) DO UPDATE
             SET last_received_at = greatest(site_uploads.last_received_at, excluded.last_received_at)",
            new.site,
            new.role.as_str()
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(StoredUpload {
            revision,
            duplicate: false,
            job_ids,
        }))
    }
}

/// Refuses a model or version that is not active yet when it would pass a
/// bound. New versions are checked one at a time (an advisory lock), so racing
/// uploads cannot pass the bound together.
async fn check_model_bounds(
    tx: &mut sqlx::PgConnection,
    model: &str,
    version: &str,
    bounds: ModelBounds,
) -> Result<Option<ModelBoundExceeded>> {
    let days = bounds.active_days as i32;
    if version_active(tx, model, version, days).await? {
        return Ok(None);
    }
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('segwatch model bounds'))")
        .execute(&mut *tx)
        .await?;
    if version_active(tx, model, version, days).await? {
        return Ok(None);
    }
    let counts = sqlx::query!(
        r#"SELECT count(DISTINCT model) FILTER (WHERE model <> $1) AS "other_models!",
                  count(DISTINCT model_version) FILTER (WHERE model = $1) AS "versions!"
           FROM segmentations WHERE role = 'prediction' AND received_at > now() - make_interval(days => $2)"#,
        model,
        days
    )
    .fetch_one(tx)
    .await?;
    // This model counts once whether it is active already or not.
    Ok(if counts.other_models >= i64::from(bounds.models) {
        Some(ModelBoundExceeded::Models {
            limit: bounds.models,
        })
    } else if counts.versions >= i64::from(bounds.versions) {
        Some(ModelBoundExceeded::Versions {
            limit: bounds.versions,
        })
    } else {
        None
    })
}

/// Whether `model` `version` has a prediction from the last `days` days.
async fn version_active(
    tx: &mut sqlx::PgConnection,
    model: &str,
    version: &str,
    days: i32,
) -> Result<bool> {
    let active = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM segmentations WHERE role = 'prediction' AND model = $1
         AND model_version = $2 AND received_at > now() - make_interval(days => $3))",
        model,
        version,
        days
    )
    .fetch_one(tx)
    .await?;
    Ok(active.unwrap_or(false))
}

/// Adds a pair's structures to those its model version has gathered, unless
/// that would pass `limit`. Versions gathering new structures are serialised
/// (an advisory lock per version), so racing pairs cannot pass it together.
async fn gather_structures(
    tx: &mut sqlx::PgConnection,
    model: &str,
    version: &str,
    mut structures: Vec<String>,
    limit: u32,
) -> Result<Option<ModelBoundExceeded>> {
    structures.sort();
    structures.dedup();
    if new_structures(tx, model, version, &structures)
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtext('segwatch structures ' || $1 || ' ' || $2))",
        model,
        version
    )
    .execute(&mut *tx)
    .await?;
    let added = new_structures(tx, model, version, &structures).await?;
    let gathered = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM version_structures WHERE model = $1 AND model_version = $2"#,
        model,
        version
    )
    .fetch_one(&mut *tx)
    .await?;
    if gathered + added.len() as i64 > i64::from(limit) {
        return Ok(Some(ModelBoundExceeded::Structures { limit }));
    }
    sqlx::query!(
        "INSERT INTO version_structures (model, model_version, structure)
         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
        model,
        version,
        &added
    )
    .execute(&mut *tx)
    .await?;
    Ok(None)
}

/// Those of `structures` the model version has not gathered yet.
async fn new_structures(
    tx: &mut sqlx::PgConnection,
    model: &str,
    version: &str,
    structures: &[String],
) -> Result<Vec<String>> {
    let new = sqlx::query_scalar!(
        "SELECT s FROM unnest($3::text[]) AS s WHERE NOT EXISTS (
             SELECT 1 FROM version_structures WHERE model = $1 AND model_version = $2 AND structure = s)",
        model,
        version,
        structures
    )
    .fetch_all(tx)
    .await?;
    Ok(new.into_iter().flatten().collect())
}
