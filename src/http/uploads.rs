//! `PUT …/prediction` and `PUT …/reference`: validate an upload completely, then
//! store it (and enqueue its pair) in one transaction. A 2xx means it is
//! committed to the database.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::auth::Auth;
use super::prediction_form::{self, form_boundary};
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::ids::{DEFAULT_READER, check_reader};
use crate::ingest::{Upload, ingest};
use crate::store::SegRole;

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
    /// Pseudonym of a reference's reader (`r1`, `reader-a`; never a name;
    /// default `default`); refused on a prediction.
    #[param(min_length = 1, max_length = 16, pattern = "^[a-z0-9][a-z0-9_-]*$")]
    pub reader: Option<String>,
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

/// A prediction with its probabilities (`multipart/form-data`); no other
/// part is accepted (the derived Deserialize only carries
/// `deny_unknown_fields` into the schema as `additionalProperties: false`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by the OpenAPI derive only
struct PredictionForm {
    /// The label NIfTI or DICOM SEG, as a single-body upload sends it.
    #[schema(value_type = String, format = Binary, min_length = 1)]
    labels: Vec<u8>,
    /// A float32 or float64 NIfTI on the labels' grid with every value from 0
    /// to 1: one channel along the fourth dimension per structure, in the
    /// order of the model version's schema (its structures with a label), or
    /// without a schema the labels the prediction draws, ascending.
    #[schema(value_type = Option<String>, format = Binary)]
    probabilities: Option<Vec<u8>>,
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
    request_body(content((super::FileBody = "application/octet-stream"), (PredictionForm = "multipart/form-data")),
        description = "NIfTI (.nii/.nii.gz) or DICOM SEG; or, to have probabilities scored too, multipart/form-data with the label file as part `labels` and a float NIfTI of probabilities as part `probabilities`"),
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
    let (model, model_version, reader) = match role {
        SegRole::Prediction => {
            if query.reader.is_some() {
                return Err(Problem::bad_request(
                    "reader-on-prediction",
                    "Reader on a prediction",
                    "a reader names who drew a reference; a prediction has a model version",
                ));
            }
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
            (Some(model), Some(version), None)
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
            let reader = query
                .reader
                .clone()
                .unwrap_or_else(|| DEFAULT_READER.into());
            check_reader(&reader).map_err(|e| {
                Problem::bad_request("invalid-reader", "Invalid reader", e.to_string())
            })?;
            (None, None, Some(reader))
        }
    };
    let boundary = form_boundary(headers)?;
    match (&boundary, role) {
        (None, _) => check_content_type(headers)?,
        (Some(_), SegRole::Reference) => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "multipart/form-data carries a prediction with its probabilities; send a reference as the file itself (application/octet-stream)",
            ));
        }
        (Some(_), SegRole::Prediction) => {}
    }
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
    let (body, probabilities) = match boundary {
        Some(boundary) => {
            let parts = app
                .compute
                .run(0, move || prediction_form::split(body, &boundary))
                .await??;
            (parts.labels, parts.probabilities)
        }
        None => (body, None),
    };
    let ingested = ingest(
        app.services(),
        Upload {
            site,
            case,
            role,
            model,
            model_version,
            reader,
            acquisition,
            observed_at: query.observed_at,
            sop_instance_uid: None,
            probabilities,
        },
        body,
        None,
    )
    .await?;
    let status = if ingested.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        UploadAccepted {
            case_url: case_url(site, case),
            role: role.as_str().into(),
            revision: ingested.revision,
            duplicate: ingested.duplicate,
            queued: ingested.queued,
        },
    ))
}

/// Where a case is followed.
pub(super) fn case_url(site: &str, case: &str) -> String {
    format!("/v1/sites/{site}/cases/{case}")
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
    Problem::refuse_nul(fields.values().filter_map(Value::as_str))?;
    Ok(Value::Object(fields))
}
