//! `PUT …/prediction` and `PUT …/reference`: validate an upload completely, then
//! store it (and enqueue its pair) in one transaction. A 2xx means it is in Postgres.

use std::io::Write;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::config::Config;
use crate::formats::dicom_seg::Provenance;
use crate::formats::{self, Decoded, FormatError, Limits, deidentify};
use crate::metrics::pairing;
use crate::store::{ModelBoundExceeded, ModelBounds, NewSegmentation, SegRole};
use crate::volume::Layout;

/// Header carrying acquisition metadata as a JSON object.
pub const ACQUISITION_HEADER: &str = "x-segwatch-acquisition";
/// Media types that cannot be a segmentation file; anything else is sniffed.
fn refused_media(media: &str) -> bool {
    media.starts_with("text/")
        || media.starts_with("multipart/")
        || media.ends_with("json")
        || media.ends_with("xml")
}

/// Query parameters of an upload.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Model name (required for predictions).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub model: Option<String>,
    /// Model version (required for predictions).
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub model_version: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub scanner_manufacturer: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub scanner_model: Option<String>,
    pub slice_thickness_mm: Option<f64>,
    #[param(pattern = "^[^\\u0000]*$")]
    pub protocol: Option<String>,
    /// When the case happened (admin keys only, for simulations and back-fills).
    pub observed_at: Option<DateTime<Utc>>,
}

/// A prediction's query as documented: [`UploadQuery`] with the model and its
/// version required. The handler reads [`UploadQuery`], so that a missing one
/// gets its own 400 (`missing-model`) rather than a generic rejection.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the OpenAPI derive only
struct PredictionQuery {
    /// Model name.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    model: String,
    /// Model version.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    model_version: String,
    #[param(pattern = "^[^\\u0000]*$")]
    scanner_manufacturer: Option<String>,
    #[param(pattern = "^[^\\u0000]*$")]
    scanner_model: Option<String>,
    slice_thickness_mm: Option<f64>,
    #[param(pattern = "^[^\\u0000]*$")]
    protocol: Option<String>,
    /// When the case happened (admin keys only, for simulations and back-fills).
    observed_at: Option<DateTime<Utc>>,
}

/// The answer to an accepted upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadAccepted {
    /// Where to follow the case.
    pub case_url: String,
    pub role: String,
    pub revision: i32,
    /// True when these bytes were already stored: nothing changed.
    pub duplicate: bool,
    /// True when this upload completed a pair and its scoring is queued.
    pub queued: bool,
}

#[utoipa::path(put, path = "/v1/sites/{site}/cases/{case}/prediction", tag = "uploads",
    params(("site" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("case" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$", description = "pseudonymous case key"), PredictionQuery),
    request_body(content = super::FileBody, description = "NIfTI (.nii/.nii.gz) or DICOM SEG", content_type = "application/octet-stream"),
    responses((status = 202, body = UploadAccepted, description = "stored"), (status = 200, body = UploadAccepted, description = "already stored"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])))]
pub async fn put_prediction(
    state: State<AppState>,
    auth: Auth,
    Path((site, case)): Path<(String, String)>,
    query: Query<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    upload(
        state,
        auth,
        site,
        case,
        SegRole::Prediction,
        query,
        headers,
        body,
    )
    .await
}

#[utoipa::path(put, path = "/v1/sites/{site}/cases/{case}/reference", tag = "uploads",
    params(("site" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("case" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$", description = "pseudonymous case key"), UploadQuery),
    request_body(content = super::FileBody, description = "NIfTI (.nii/.nii.gz) or DICOM SEG", content_type = "application/octet-stream"),
    responses((status = 202, body = UploadAccepted, description = "stored"), (status = 200, body = UploadAccepted, description = "already stored"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])))]
pub async fn put_reference(
    state: State<AppState>,
    auth: Auth,
    Path((site, case)): Path<(String, String)>,
    query: Query<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    upload(
        state,
        auth,
        site,
        case,
        SegRole::Reference,
        query,
        headers,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    State(app): State<AppState>,
    auth: Auth,
    site: String,
    case: String,
    role: SegRole,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let result = accept(&app, &auth, &site, &case, role, query, &headers, body).await;
    let reason = match &result {
        Ok((status, _)) if *status == StatusCode::OK => "duplicate".to_owned(),
        Ok(_) => "stored".to_owned(),
        Err(problem) => problem.reason().replace('-', "_"),
    };
    // Refusals before the key is checked carry no trustworthy site.
    if auth.0.can_write(&site) {
        app.metrics
            .segmentations_received_total
            .with_label_values(&[site.as_str(), role.as_str(), reason.as_str()])
            .inc();
    }
    let (status, accepted) = result?;
    if status == StatusCode::ACCEPTED {
        app.metrics
            .last_upload_timestamp_seconds
            .with_label_values(&[site.as_str(), role.as_str()])
            .set(Utc::now().timestamp() as f64);
    }
    Ok((
        status,
        [(header::LOCATION, accepted.case_url.clone())],
        Json(accepted),
    )
        .into_response())
}

#[allow(clippy::too_many_arguments)]
async fn accept(
    app: &AppState,
    auth: &Auth,
    site: &str,
    case: &str,
    role: SegRole,
    query: UploadQuery,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, UploadAccepted), Problem> {
    valid_key("site", site)?;
    valid_key("case", case)?;
    auth.write(site)?;
    if query.observed_at.is_some() {
        auth.admin()
            .map_err(|_| Problem::forbidden("observed_at may only be set with an admin key"))?;
    }
    let (model, model_version) = match role {
        SegRole::Prediction => {
            let model = query.model.clone().ok_or_else(|| {
                Problem::bad_request(
                    "missing-model",
                    "Missing model",
                    "a prediction needs ?model=…&model_version=…",
                )
            })?;
            let version = query.model_version.clone().ok_or_else(|| {
                Problem::bad_request(
                    "missing-model",
                    "Missing model version",
                    "a prediction needs ?model_version=…",
                )
            })?;
            valid_key("model", &model)?;
            valid_key("model_version", &version)?;
            (Some(model), Some(version))
        }
        SegRole::Reference => {
            // Not used for a reference, but refused as for a prediction when malformed.
            for (what, value) in [
                ("model", &query.model),
                ("model_version", &query.model_version),
            ] {
                if let Some(value) = value {
                    valid_key(what, value)?;
                }
            }
            (None, None)
        }
    };
    check_content_type(headers)?;
    let acquisition = acquisition(&query, headers)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Upload too large",
                format!(
                    "{e}; the limit is {} bytes",
                    app.config.limits.max_upload_bytes
                ),
            )
        } else {
            // Most often a Content-Encoding whose data does not decode.
            Problem::bad_request(
                "unreadable-body",
                "Unreadable request body",
                format!("{e}: check the Content-Encoding and the data sent"),
            )
        }
    })?;
    if body.is_empty() {
        return Err(Problem::bad_request(
            "empty-body",
            "Empty upload",
            "the request body must be the segmentation file",
        ));
    }
    ingest(
        app,
        Upload {
            site,
            case,
            role,
            model,
            model_version,
            acquisition,
            observed_at: query.observed_at,
            sop_instance_uid: None,
        },
        body,
        None,
    )
    .await
}

/// An upload, validated as a request.
pub(super) struct Upload<'a> {
    pub site: &'a str,
    pub case: &'a str,
    pub role: SegRole,
    pub model: Option<String>,
    pub model_version: Option<String>,
    pub acquisition: Value,
    pub observed_at: Option<chrono::DateTime<Utc>>,
    /// DICOM uploads are idempotent on their SOPInstanceUID too.
    pub sop_instance_uid: Option<String>,
}

/// Checks an upload's content (decoding it on the compute pool unless the caller
/// did) against the schema and the case's other segmentation, then stores it.
pub(super) async fn ingest(
    app: &AppState,
    upload: Upload<'_>,
    body: Bytes,
    decoded: Option<Decoded>,
) -> Result<(StatusCode, UploadAccepted), Problem> {
    let Upload {
        site,
        case,
        role,
        model,
        model_version,
        acquisition,
        observed_at,
        sop_instance_uid,
    } = upload;
    let (queued, _) = app.store.job_counts().await?;
    if queued >= app.config.limits.max_queue_depth {
        return Err(Problem::unavailable(
            format!("{queued} jobs are waiting; retry later"),
            30,
        ));
    }
    let case_url = format!("/v1/sites/{site}/cases/{case}");
    // The hash of the upload as received (not of what is stored), so the same
    // bytes sent again are recognised.
    // Hashed on the compute pool: hundreds of MB would stall the async runtime.
    let hashed = body.clone();
    let sha256 = app
        .compute
        .run(0, move || Sha256::digest(&hashed).to_vec())
        .await?;
    let duplicate = match &sop_instance_uid {
        Some(uid) => app.store.find_instance(site, case, role, uid).await?,
        None => None,
    };
    let duplicate = match duplicate {
        Some(revision) => Some(revision),
        None => app.store.find_duplicate(site, case, role, &sha256).await?,
    };
    if let Some(revision) = duplicate {
        return Ok((
            StatusCode::OK,
            UploadAccepted {
                case_url,
                role: role.as_str().into(),
                revision,
                duplicate: true,
                queued: false,
            },
        ));
    }

    // Decode, de-identify and compress for storage on the compute pool.
    let limits = app.config.limits.decode();
    let voxels = formats::estimated_voxels(&body, &limits);
    let bytes = body.clone();
    let key = uid_key(&app.config);
    let content_key = key.clone();
    let max_structures = app.config.limits.max_structures;
    let max_stored = app.config.limits.stored_bytes();
    let decoded = app
        .compute
        .run(voxels, move || {
            let decoded = match decoded {
                Some(decoded) => decoded,
                None => formats::decode_upload(&bytes, &limits)?,
            };
            let structures = decoded.segmentation.structure_keys();
            if structures.len() > max_structures {
                return Ok(Err(Refusal::TooManyStructures(structures.len())));
            }
            let clean = deidentified(&bytes, decoded.format, &content_key, &limits)?;
            // What is stored must inflate within the workers' limit: hashed UIDs
            // can make a de-identified SEG longer than the upload.
            if clean.len() as u64 > max_stored {
                return Ok(Err(Refusal::StoredTooLarge(clean.len() as u64)));
            }
            Ok::<_, formats::FormatError>(Ok((decoded, gzip(&clean), structures)))
        })
        .await?;
    let (decoded, content, structures) = decoded?.map_err(|refusal| match refusal {
        Refusal::TooManyStructures(structures) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-many-structures",
            "Too many structures",
            format!(
                "the upload holds {structures} structures; at most {max_structures} are accepted (limits.max_structures)"
            ),
        ),
        Refusal::StoredTooLarge(bytes) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Upload too large",
            format!(
                "the de-identified file is {bytes} bytes; at most {max_stored} can be stored for scoring (limits.max_upload_bytes, limits.max_decompressed_bytes)"
            ),
        ),
    })?;
    let layout = decoded.segmentation.layout();

    // The structure schema of the case's model version, and the partner's grid.
    let partner = app.store.latest(site, case, role.other()).await?;
    let (schema_model, schema_version) = match role {
        SegRole::Prediction => (model.clone(), model_version.clone()),
        SegRole::Reference => (
            partner.as_ref().and_then(|p| p.model.clone()),
            partner.as_ref().and_then(|p| p.model_version.clone()),
        ),
    };
    if let (Some(m), Some(v)) = (&schema_model, &schema_version)
        && let Some(schema) = app.store.schema(m, v).await?
    {
        pairing::check_structures(&decoded.segmentation, &schema)?;
    }
    if let Some(partner) = &partner {
        let partner_layout: Layout = serde_json::from_value(partner.grid.clone())
            .map_err(|e| Problem::internal(format!("stored grid: {e}")))?;
        match role {
            SegRole::Prediction => pairing::check_layouts(&layout, &partner_layout)?,
            SegRole::Reference => pairing::check_layouts(&partner_layout, &layout)?,
        }
    }

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
        acquisition,
        provenance: decoded
            .provenance
            .map(|p| serde_json::to_value(stored_provenance(p, &key)).unwrap_or(Value::Null)),
        observed_at,
        sop_instance_uid,
        structures,
    };
    let limits = &app.config.limits;
    let bounds = ModelBounds {
        models: limits.max_models,
        versions: limits.max_model_versions,
        active_days: crate::config::ACTIVE_DAYS,
        structures: u32::try_from(limits.max_structures).unwrap_or(u32::MAX),
    };
    let stored = app
        .store
        .store_upload(&new, bounds)
        .await?
        .map_err(|exceeded| model_bound_problem(exceeded, &new))?;
    let status = if stored.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        UploadAccepted {
            case_url,
            role: role.as_str().into(),
            revision: stored.revision,
            duplicate: stored.duplicate,
            queued: stored.job_id.is_some(),
        },
    ))
}

/// Why a prediction of one more model or version is refused: each adds metric
/// series, so one key must not add them without bound.
fn model_bound_problem(exceeded: ModelBoundExceeded, new: &NewSegmentation) -> Problem {
    let model = new.model.as_deref().unwrap_or_default();
    let days = crate::config::ACTIVE_DAYS;
    let (kind, title, detail) = match exceeded {
        ModelBoundExceeded::Models { limit } => (
            "too-many-models",
            "Too many models",
            format!(
                "{limit} models already have predictions from the last {days} days (limits.max_models); model {model} would be one more"
            ),
        ),
        ModelBoundExceeded::Versions { limit } => (
            "too-many-model-versions",
            "Too many model versions",
            format!(
                "{limit} versions of model {model} already have predictions from the last {days} days (limits.max_model_versions)"
            ),
        ),
        ModelBoundExceeded::Structures { limit } => (
            "too-many-structures",
            "Too many structures",
            format!(
                "this pair would bring its model version past {limit} structures (limits.max_structures)"
            ),
        ),
    };
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, kind, title, detail)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !refused_media(&media) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!(
                "{media} is not a segmentation; send NIfTI or DICOM SEG as application/octet-stream"
            ),
        ))
    }
}

/// Acquisition metadata from the query and the JSON header (the header wins).
fn acquisition(query: &UploadQuery, headers: &HeaderMap) -> Result<Value, Problem> {
    let mut fields = Map::new();
    let mut text = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            fields.insert(key.into(), Value::String(v.clone()));
        }
    };
    text("scanner_manufacturer", &query.scanner_manufacturer);
    text("scanner_model", &query.scanner_model);
    text("protocol", &query.protocol);
    if let Some(t) = query.slice_thickness_mm {
        fields.insert("slice_thickness_mm".into(), serde_json::json!(t));
    }
    if let Some(header) = headers.get(ACQUISITION_HEADER) {
        let bad = |detail: String| {
            Problem::bad_request(
                "invalid-acquisition",
                "Invalid acquisition metadata",
                detail,
            )
        };
        let parsed: Value = serde_json::from_slice(header.as_bytes())
            .map_err(|e| bad(format!("{ACQUISITION_HEADER} is not JSON: {e}")))?;
        let Value::Object(object) = parsed else {
            return Err(bad(format!("{ACQUISITION_HEADER} must be a JSON object")));
        };
        if object.len() > 32 {
            return Err(bad("at most 32 acquisition fields".into()));
        }
        for (key, value) in object {
            if valid_key("acquisition field", &key).is_err()
                || !(value.is_string() || value.is_number() || value.is_boolean())
            {
                return Err(bad(format!(
                    "field {key:?} must be a short name with a string, number or boolean value"
                )));
            }
            fields.insert(key, value);
        }
    }
    // Checked here, not left to the database: a duplicate upload stores nothing
    // and must be refused all the same.
    let has_nul = |v: &Value| v.as_str().is_some_and(|t| t.contains('\0'));
    if fields.values().any(has_nul) {
        return Err(Problem::bad_request(
            "invalid-value",
            "Invalid value",
            "text must not contain NUL characters",
        ));
    }
    Ok(Value::Object(fields))
}

/// The key of the HMAC that replaces DICOM UIDs in what is stored: the
/// `dicomweb.case_key_secret` when configured (so nobody without it can link a
/// stored UID to the PACS), else a fixed key (the hash then only hides the UID
/// from readers who do not hold the original).
pub(super) fn uid_key(config: &Config) -> Vec<u8> {
    match &config.dicomweb.case_key_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => b"segwatch uid hash".to_vec(),
    }
}

/// What is stored of an upload: the file de-identified (formats::deidentify:
/// PS3.15 Annex E basic profile with keyed-hashed UIDs for a SEG, free text and
/// extensions dropped for a NIfTI), gzip-compressed. Never the original bytes.
/// Why a decoded upload is refused before it is stored.
enum Refusal {
    TooManyStructures(usize),
    StoredTooLarge(u64),
}

/// The upload as it is kept: de-identified (see [`deidentify`]), uncompressed.
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
