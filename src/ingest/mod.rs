//! Ingest: an upload already validated as a request becomes a stored,
//! de-identified segmentation, and a queued job when it completes a pair. The
//! REST and DICOMweb routes share it; its typed error is mapped once to a
//! problem (`http::problem`) and once to a DICOM failure reason
//! (`http::dicomweb`).

mod probabilities;

use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::compute::{Compute, ComputePanic};
use crate::config::{ACTIVE_DAYS, Config};
use crate::formats::dicom_seg::Provenance;
use crate::formats::{self, Decoded, FormatError, Limits, deidentify};
use crate::metrics::pairing::{self, PairingError};
use crate::metrics::probabilistic::ProbabilityError;
use crate::store::{
    ModelBoundExceeded, ModelBounds, NewSegmentation, SegRole, Source, Store, StoreError,
    StoredProbabilities,
};

use crate::volume::Layout;
pub use probabilities::ProbabilitiesError;

/// What ingest needs of the service.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    pub store: &'a Store,
    pub compute: &'a Compute,
    pub config: &'a Config,
}

/// An upload, validated as a request.
pub struct Upload<'a> {
    pub site: &'a str,
    pub case: &'a str,
    pub role: SegRole,
    pub model: Option<String>,
    pub model_version: Option<String>,
    /// Pseudonym of a reference's reader (`None` for a prediction).
    pub reader: Option<String>,
    pub acquisition: Value,
    pub observed_at: Option<DateTime<Utc>>,
    /// DICOM uploads are idempotent on their SOPInstanceUID too (keyed-hashed).
    pub sop_instance_uid: Option<String>,
    /// A prediction's float NIfTI of probabilities, one channel per structure.
    pub probabilities: Option<Bytes>,
}

/// What storing an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub revision: i32,
    /// The same bytes (or DICOM instance) were already stored: nothing changed.
    pub duplicate: bool,
    /// The upload completed a pair and its scoring is queued.
    pub queued: bool,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// `limits.max_queue_depth` jobs are waiting.
    #[error("{queued} jobs are waiting; retry later")]
    QueueFull { queued: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Compute(#[from] ComputePanic),
    /// The file cannot be decoded, or passes a size limit of its format.
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(
        "the upload holds {found} structures; at most {limit} are accepted (limits.max_structures)"
    )]
    TooManyStructures { found: usize, limit: usize },
    #[error(
        "the de-identified file is {bytes} bytes; at most {limit} can be stored for scoring (limits.max_upload_bytes, limits.max_decompressed_bytes)"
    )]
    StoredTooLarge { bytes: u64, limit: u64 },
    /// The schema does not know a structure, or the grid differs from the
    /// case's other segmentation.
    #[error(transparent)]
    Pairing(#[from] PairingError),
    /// The probabilities sent with a prediction do not fit it.
    #[error(transparent)]
    Probabilities(#[from] ProbabilitiesError),
    #[error("the case's stored grid is unreadable: {0}")]
    StoredGrid(String),
    /// One more model, model version or structure than the limits allow.
    #[error("{}", describe_bound(*.exceeded, .model))]
    ModelBound {
        exceeded: ModelBoundExceeded,
        model: String,
    },
}

impl IngestError {
    /// Whether the same upload may be stored later: the service was busy or its
    /// database away, not the upload wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::QueueFull { .. } => true,
            IngestError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Whether a size limit refused the upload.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            IngestError::Format(FormatError::TooLarge(_))
                | IngestError::StoredTooLarge { .. }
                | IngestError::Probabilities(ProbabilitiesError::Invalid(
                    ProbabilityError::Format(FormatError::TooLarge(_))
                ))
        )
    }
}

fn describe_bound(exceeded: ModelBoundExceeded, model: &str) -> String {
    let days = ACTIVE_DAYS;
    match exceeded {
        ModelBoundExceeded::Models { limit } => format!(
            "{limit} models already have predictions from the last {days} days (limits.max_models); model {model} would be one more"
        ),
        ModelBoundExceeded::Versions { limit } => format!(
            "{limit} versions of model {model} already have predictions from the last {days} days (limits.max_model_versions)"
        ),
        ModelBoundExceeded::Structures { limit } => format!(
            "this pair would bring its model version past {limit} structures (limits.max_structures)"
        ),
    }
}

/// Checks an upload's content (decoding it on the compute pool unless the
/// caller did) against the schema and the case's other segmentation, then
/// stores it de-identified. Identical bytes already stored change nothing; the
/// store checks that again under the case's lock, for uploads that race.
pub async fn ingest(
    services: Services<'_>,
    upload: Upload<'_>,
    body: Bytes,
    decoded: Option<Decoded>,
) -> Result<Ingested, IngestError> {
    let Services {
        store,
        compute,
        config,
    } = services;
    let Upload {
        site,
        case,
        role,
        model,
        model_version,
        reader,
        acquisition,
        observed_at,
        sop_instance_uid,
        probabilities,
    } = upload;
    let (queued, _) = store.job_counts().await?;
    if queued >= config.limits.max_queue_depth {
        return Err(IngestError::QueueFull { queued });
    }
    // The hash of the upload as received (not of what is stored), so the same
    // bytes sent again are recognised; on the compute pool, as hundreds of MB
    // would stall the async runtime.
    let (hashed, hashed_probabilities) = (body.clone(), probabilities.clone());
    let sha256 = compute
        .run(0, move || {
            upload_hash(&hashed, hashed_probabilities.as_deref())
        })
        .await?;
    let duplicate = match &sop_instance_uid {
        Some(uid) => store.find_instance(site, case, role, uid).await?,
        None => None,
    };
    let duplicate = match duplicate {
        Some(revision) => Some(revision),
        None => {
            let source = Source {
                version: model.as_deref().zip(model_version.as_deref()),
                reader: reader.as_deref(),
            };
            store
                .find_duplicate(site, case, role, source, &sha256)
                .await?
        }
    };
    if let Some(revision) = duplicate {
        return Ok(Ingested {
            revision,
            duplicate: true,
            queued: false,
        });
    }

    // What the upload must fit, so that every pair it completes is scored:
    // the grid of its partner (for a prediction without a reference yet, of
    // the other model versions' predictions, as the reference will pair with
    // each; a version may still replace its own on another grid) and the
    // structure schemas of the model versions it pairs with. A prediction's
    // schema must also know the reference's structures.
    let partner = store.latest(site, case, role.other(), None).await?;
    let grid_partner = match (&partner, &model, &model_version) {
        (None, Some(m), Some(v)) => {
            let besides = Some((m.as_str(), v.as_str()));
            store.latest(site, case, role, besides).await?
        }
        _ => None,
    };
    let versions = match (role, &model, &model_version) {
        (SegRole::Prediction, Some(m), Some(v)) => vec![(m.clone(), v.clone())],
        (SegRole::Prediction, _, _) => Vec::new(),
        (SegRole::Reference, _, _) => store.prediction_versions(site, case).await?,
    };
    let mut schemas = Vec::with_capacity(versions.len());
    for (m, v) in &versions {
        if let Some(schema) = store.schema(m, v).await? {
            schemas.push(schema);
        }
    }
    if let (SegRole::Prediction, Some(reference)) = (role, &partner) {
        for schema in &schemas {
            pairing::check_structure_keys(&reference.structures, schema).map_err(|e| match e {
                PairingError::Unknown(what) => {
                    PairingError::Unknown(format!("{what} (in the case's reference)"))
                }
                other => other,
            })?;
        }
    }
    let partner_layout: Option<Layout> = partner
        .as_ref()
        .or(grid_partner.as_ref())
        .map(|p| serde_json::from_value(p.grid.clone()))
        .transpose()
        .map_err(|e| IngestError::StoredGrid(e.to_string()))?;

    // Decode, check, de-identify and compress on the compute pool.
    let limits = config.limits.decode();
    let voxels = probabilities::admitted_voxels(&body, probabilities.as_deref(), &limits);
    let key = uid_key(config);
    let content_key = key.clone();
    let max_structures = config.limits.max_structures;
    let max_stored = config.limits.stored_bytes();
    let checked = compute
        .run(voxels, move || {
            let decoded = match decoded {
                Some(decoded) => decoded,
                None => formats::decode_upload(&body, &limits)?,
            };
            let structures = decoded.segmentation.structure_keys();
            if structures.len() > max_structures {
                return Err(IngestError::TooManyStructures {
                    found: structures.len(),
                    limit: max_structures,
                });
            }
            for schema in &schemas {
                pairing::check_structures(&decoded.segmentation, schema)?;
            }
            let layout = decoded.segmentation.layout();
            if let Some(partner) = &partner_layout {
                match role {
                    SegRole::Prediction => pairing::check_layouts(&layout, partner)?,
                    SegRole::Reference => pairing::check_layouts(partner, &layout)?,
                }
            }
            let probabilities = probabilities
                .map(|bytes| {
                    let labels =
                        probabilities::channel_labels(&decoded.segmentation, schemas.first());
                    let clean =
                        probabilities::check(&bytes, &decoded.segmentation, &labels, &limits)?;
                    Ok::<_, IngestError>(StoredProbabilities {
                        content: gzip(&clean),
                        labels,
                    })
                })
                .transpose()?;
            let clean = deidentified(&body, decoded.format, &content_key, &limits)?;
            // What is stored must inflate within the workers' limit: hashed UIDs
            // can make a de-identified SEG longer than the upload.
            if clean.len() as u64 > max_stored {
                return Err(IngestError::StoredTooLarge {
                    bytes: clean.len() as u64,
                    limit: max_stored,
                });
            }
            Ok((decoded, layout, gzip(&clean), structures, probabilities))
        })
        .await??;
    let (decoded, layout, content, structures, probabilities) = checked;

    let new = NewSegmentation {
        site: site.into(),
        case_key: case.into(),
        role,
        sha256,
        format: decoded.format,
        content,
        voxels: decoded.segmentation.grid().len() as i64,
        grid: serde_json::to_value(&layout).unwrap_or(Value::Null),
        model,
        model_version,
        reader,
        acquisition,
        provenance: decoded
            .provenance
            .map(|p| serde_json::to_value(stored_provenance(p, &key)).unwrap_or(Value::Null)),
        observed_at,
        sop_instance_uid,
        structures,
        probabilities,
    };
    let limits = &config.limits;
    let bounds = ModelBounds {
        models: limits.max_models,
        versions: limits.max_model_versions,
        active_days: ACTIVE_DAYS,
        structures: u32::try_from(limits.max_structures).unwrap_or(u32::MAX),
    };
    let stored = store
        .store_upload(&new, bounds)
        .await?
        .map_err(|exceeded| IngestError::ModelBound {
            exceeded,
            model: new.model.clone().unwrap_or_default(),
        })?;
    Ok(Ingested {
        revision: stored.revision,
        duplicate: stored.duplicate,
        queued: !stored.job_ids.is_empty(),
    })
}

/// The hash that recognises an upload sent again: of the file alone, or of
/// the label file and its probabilities, framed so that no split of the same
/// bytes between the two hashes alike, nor like a file alone.
fn upload_hash(labels: &[u8], probabilities: Option<&[u8]>) -> Vec<u8> {
    let Some(probabilities) = probabilities else {
        return Sha256::digest(labels).to_vec();
    };
    let mut hasher = Sha256::new();
    hasher.update(b"segwatch labels+probabilities\0");
    hasher.update((labels.len() as u64).to_le_bytes());
    hasher.update(labels);
    hasher.update(probabilities);
    hasher.finalize().to_vec()
}

/// The key of the HMAC that replaces DICOM UIDs in what is stored: the
/// `dicomweb.case_key_secret` when configured (so nobody without it can link a
/// stored UID to the PACS), else a fixed key (the hash then only hides the UID
/// from readers who do not hold the original).
pub fn uid_key(config: &Config) -> Vec<u8> {
    match &config.dicomweb.case_key_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => b"segwatch uid hash".to_vec(),
    }
}

/// What is stored of an upload: the file de-identified (formats::deidentify:
/// PS3.15 Annex E basic profile with keyed-hashed UIDs for a SEG, free text and
/// extensions dropped for a NIfTI), uncompressed. Never the original bytes.
fn deidentified(
    bytes: &[u8],
    format: &str,
    key: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, FormatError> {
    if format == "dicom_seg" {
        deidentify::deidentify_seg(bytes, key)
    } else {
        deidentify::deidentify_nifti(bytes, limits)
    }
}

/// The provenance stored with a SEG: UIDs keyed-hashed as in the stored file, and
/// the free-text SeriesDescription dropped (it only serves role rules at ingest).
fn stored_provenance(p: Provenance, key: &[u8]) -> Provenance {
    let hash = |uid: Option<String>| uid.map(|u| deidentify::hash_uid(&u, key));
    Provenance {
        sop_instance_uid: hash(p.sop_instance_uid),
        study_instance_uid: hash(p.study_instance_uid),
        series_instance_uid: hash(p.series_instance_uid),
        referenced_series_instance_uid: hash(p.referenced_series_instance_uid),
        frame_of_reference_uid: hash(p.frame_of_reference_uid),
        series_description: None,
        ..p
    }
}

/// gzip of what is stored.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(bytes)
        .and_then(|_| encoder.finish())
        .unwrap_or_default()
}
