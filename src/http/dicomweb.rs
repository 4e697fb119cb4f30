//! DICOMweb STOW-RS (PS3.18 10.5): a PACS stores DICOM SEG instances; each is
//! routed to a site (from the key), a case (StudyInstanceUID and the referenced
//! series), a role (SegmentAlgorithmType or configured rules) and a model (the
//! algorithm identification), then ingested like a REST upload.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::auth::Auth;
use super::multipart::PartSplitter;
use super::problem::Problem;
use super::uploads::case_url;
use super::{AppState, valid_key};
use crate::formats::deidentify::hash_uid;
use crate::formats::dicom_seg::{self, Provenance};
use crate::formats::{Decoded, FormatError};
use crate::ids::DEFAULT_READER;
use crate::ingest::{Upload, ingest, uid_key};
use crate::store::{Role, SegRole};

/// PS3.18 failure reasons.
const PROCESSING_FAILURE: u16 = 0x0110;
const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
const OUT_OF_RESOURCES: u16 = 0xA700;
const DOES_NOT_MATCH_STUDY: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;

/// Which site an admin key stores for.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StowQuery {
    /// The site: required with an admin key (400 without), ignored with a
    /// site's ingest key, which stores for its own site.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub site: Option<String>,
}

#[utoipa::path(post, path = "/dicom-web/studies", tag = "dicomweb", params(StowQuery),
    request_body(content = super::FileBody, content_type = "multipart/related; type=\"application/dicom\"", description = "DICOM SEG instances"),
    responses((status = 200, description = "all stored (application/dicom+json)"), (status = 202, description = "some stored"),
        (status = 409, description = "none stored"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 415, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("basic" = [])))]
pub async fn store_instances(
    state: State<AppState>,
    auth: Auth,
    query: Query<StowQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    stow(state, auth, query, None, headers, body).await
}

#[utoipa::path(post, path = "/dicom-web/studies/{study}", tag = "dicomweb", params(("study" = String, Path), StowQuery),
    request_body(content = super::FileBody, content_type = "multipart/related; type=\"application/dicom\"", description = "DICOM SEG instances of the study"),
    responses((status = 200, description = "all stored (application/dicom+json)"), (status = 202, description = "some stored"),
        (status = 409, description = "none stored"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 415, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("basic" = [])))]
pub async fn store_study_instances(
    state: State<AppState>,
    auth: Auth,
    Path(study): Path<String>,
    query: Query<StowQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    stow(state, auth, query, Some(study), headers, body).await
}

/// The outcome of one part.
enum Stored {
    Ok {
        class: String,
        instance: String,
        case_url: String,
    },
    Failed {
        class: Option<String>,
        instance: Option<String>,
        /// The DICOM FailureReason.
        reason: u16,
        /// The metric label, as a REST refusal of the same cause gets.
        outcome: String,
        detail: String,
    },
}

async fn stow(
    State(app): State<AppState>,
    auth: Auth,
    Query(query): Query<StowQuery>,
    study: Option<String>,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Response, Problem> {
    let site = match (auth.0.role, &query.site) {
        (Role::Ingest, _) => auth.0.site.clone().unwrap_or_default(),
        (Role::Admin, Some(site)) => site.clone(),
        (Role::Admin, None) => {
            return Err(Problem::bad_request(
                "missing-site",
                "Missing site",
                "an admin key must name the site: ?site=…",
            ));
        }
        (Role::Read, _) => return Err(Problem::forbidden("a read key cannot store")),
    };
    valid_key("site", &site)?;
    auth.write(&site)?;
    let boundary = boundary(&headers)?;
    let limit = app.config.limits.max_upload_bytes;
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Upload too large",
            format!("the body is over the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Parts are stored as they complete, so a request holds one part in memory.
    let mut splitter = PartSplitter::new(&boundary);
    let mut received = 0usize;
    let mut outcomes = Vec::new();
    loop {
        let chunk = match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                let problem =
                    Problem::bad_request("unreadable-body", "Unreadable body", e.to_string());
                return Err(after_stored(problem, &outcomes));
            }
        };
        // Bytes up to the limit are still split, so parts completed within it
        // are stored before a body over the limit is refused.
        let within = chunk.len().min(limit - received);
        received += within;
        let parts = splitter
            .push(&chunk[..within])
            .map_err(|detail| after_stored(invalid_multipart(detail), &outcomes))?;
        for part in parts {
            let outcome = store_part(&app, &site, study.as_deref(), part.content)
                .await
                .map_err(|p| after_stored(p, &outcomes))?;
            let reason = match &outcome {
                Stored::Ok { .. } => "stored",
                Stored::Failed { outcome, .. } => outcome.as_str(),
            };
            app.metrics
                .segmentations_received_total
                .with_label_values(&[site.as_str(), "dicomweb", reason])
                .inc();
            outcomes.push(outcome);
        }
        if within < chunk.len() {
            return Err(after_stored(too_large(), &outcomes));
        }
    }
    splitter
        .finish()
        .map_err(|detail| after_stored(invalid_multipart(detail), &outcomes))?;
    if outcomes.is_empty() {
        return Err(invalid_multipart("the body holds no parts".into()));
    }
    Ok(answer(outcomes))
}

fn invalid_multipart(detail: String) -> Problem {
    Problem::bad_request(
        "invalid-multipart",
        "Invalid multipart/related body",
        detail,
    )
}

/// A request that fails after some of its instances were stored says so: they
/// stay stored, and sending the whole request again is harmless (storing is
/// idempotent on SOPInstanceUID).
fn after_stored(mut problem: Problem, outcomes: &[Stored]) -> Problem {
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Stored::Ok { .. }))
        .count();
    if stored > 0 {
        problem.detail = format!(
            "{}; the {stored} instance(s) before it were stored, and sending them again is harmless",
            problem.detail
        );
    }
    problem
}

/// The boundary of a `multipart/related; type="application/dicom"` body.
fn boundary(headers: &HeaderMap) -> Result<String, Problem> {
    let unsupported = |detail: String| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    };
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unsupported("send multipart/related; type=\"application/dicom\"".into()))?;
    let mut params = value.split(';').map(str::trim);
    let media = params.next().unwrap_or_default().to_ascii_lowercase();
    if media != "multipart/related" {
        return Err(unsupported(format!(
            "{media}: STOW-RS takes multipart/related; type=\"application/dicom\""
        )));
    }
    let mut boundary = None;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "type" if !value.eq_ignore_ascii_case("application/dicom") => {
                return Err(unsupported(format!(
                    "type={value}: only application/dicom parts are accepted"
                )));
            }
            "boundary" => boundary = Some(value.to_owned()),
            _ => {}
        }
    }
    boundary
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid-multipart",
                "Invalid multipart/related body",
                "the Content-Type has no boundary",
            )
        })
}

/// The case key of a SEG: a hash of its study and the series it segments (keyed
/// when a secret is configured), so no DICOM identifier ends up in URLs or metrics.
fn case_key(secret: Option<&str>, study: &str, series: &str) -> String {
    let message = format!("{study}\n{series}");
    let digest = match secret {
        Some(secret) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes any key length");
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        None => Sha256::digest(message.as_bytes()).to_vec(),
    };
    format!("dcm-{}", &hex::encode(digest)[..32])
}

/// prediction or reference: configured rules first, then SegmentAlgorithmType.
fn role_of(app: &AppState, provenance: &Provenance) -> SegRole {
    for rule in &app.config.dicomweb.role_rules {
        let value = match rule.attribute.as_str() {
            "series_description" => &provenance.series_description,
            "manufacturer" => &provenance.manufacturer,
            "manufacturer_model_name" => &provenance.manufacturer_model_name,
            "content_label" => &provenance.content_label,
            "algorithm_name" => &provenance.algorithm_name,
            _ => &provenance.software_versions,
        };
        if value
            .as_deref()
            .is_some_and(|v| v.to_lowercase().contains(&rule.contains.to_lowercase()))
        {
            return if rule.role == "prediction" {
                SegRole::Prediction
            } else {
                SegRole::Reference
            };
        }
    }
    match provenance.segment_algorithm_type.as_deref() {
        Some("AUTOMATIC") => SegRole::Prediction,
        _ => SegRole::Reference,
    }
}

/// A name usable as a model key: invalid characters become '_'.
fn key_from(text: &str) -> String {
    let key: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if key.is_empty() {
        "unknown".into()
    } else {
        key
    }
}

async fn store_part(
    app: &AppState,
    site: &str,
    study: Option<&str>,
    bytes: Bytes,
) -> Result<Stored, Problem> {
    let limits = app.config.limits.decode();
    let voxels = crate::formats::estimated_voxels(&bytes, &limits);
    let input = bytes.clone();
    let decoded = app
        .compute
        .run(voxels, move || {
            // A SEG that decodes names itself; only a failure needs a second look.
            let decoded = dicom_seg::decode(&input, &limits);
            let uids = match &decoded {
                Ok(image) => (
                    Some(image.sop_class_uid.clone()),
                    image.provenance.sop_instance_uid.clone(),
                ),
                Err(_) => dicom_seg::instance_uids(&input),
            };
            (decoded, uids)
        })
        .await?;
    let (image, (class, instance)) = decoded;
    let failed = |reason: u16, problem: Problem| Stored::Failed {
        class: class.clone(),
        instance: instance.clone(),
        reason,
        outcome: problem.reason().replace('-', "_"),
        detail: problem.detail,
    };
    let refused = |kind: &str, detail: &str| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            "Refused instance",
            detail,
        )
    };
    let image = match image {
        Ok(image) => image,
        Err(e) => {
            let reason = match e {
                FormatError::NotSegmentation(_) => SOP_CLASS_NOT_SUPPORTED,
                FormatError::TooLarge(_) => OUT_OF_RESOURCES,
                _ => CANNOT_UNDERSTAND,
            };
            return Ok(failed(reason, e.into()));
        }
    };
    let p = image.provenance.clone();
    let (Some(study_uid), Some(series_uid), Some(sop_uid)) = (
        p.study_instance_uid.clone(),
        p.referenced_series_instance_uid.clone(),
        p.sop_instance_uid.clone(),
    ) else {
        return Ok(failed(
            CANNOT_UNDERSTAND,
            refused(
                "missing-uids",
                "the SEG lacks StudyInstanceUID, a referenced series or SOPInstanceUID",
            ),
        ));
    };
    if study.is_some_and(|s| s != study_uid) {
        return Ok(failed(
            DOES_NOT_MATCH_STUDY,
            // Not the UID: this detail is logged.
            refused(
                "other-study",
                "the instance belongs to another study than the request's",
            ),
        ));
    }
    let role = role_of(app, &p);
    let (model, model_version) = match role {
        SegRole::Prediction => {
            let model = p
                .algorithm_name
                .clone()
                .or(p.manufacturer_model_name.clone())
                .or(p.manufacturer.clone());
            let version = p.algorithm_version.clone().or(p.software_versions.clone());
            match (model, version) {
                (Some(m), Some(v)) => (Some(key_from(&m)), Some(key_from(&v))),
                _ => {
                    return Ok(failed(
                        PROCESSING_FAILURE,
                        refused(
                            "missing-model",
                            "an AI SEG needs an algorithm name and version",
                        ),
                    ));
                }
            }
        }
        SegRole::Reference => (None, None),
    };
    let case = case_key(
        app.config.dicomweb.case_key_secret.as_deref(),
        &study_uid,
        &series_uid,
    );
    let mut acquisition = serde_json::Map::new();
    if let Some(t) = p.slice_thickness_mm {
        acquisition.insert("slice_thickness_mm".into(), json!(t));
    }
    if let Some(protocol) = &p.protocol_name {
        acquisition.insert("protocol".into(), json!(protocol));
    }
    let upload = Upload {
        site,
        case: &case,
        role,
        model,
        model_version,
        // STOW-RS carries no reader pseudonym: ContentCreatorName is a
        // person's name and never read. References land under the default.
        reader: (role == SegRole::Reference).then(|| DEFAULT_READER.to_owned()),
        acquisition: Value::Object(acquisition),
        observed_at: None,
        // Stored keyed-hashed like the UIDs in the stored file; the same instance
        // hashes the same way, so storing stays idempotent on it.
        sop_instance_uid: Some(hash_uid(&sop_uid, &uid_key(&app.config))),
        probabilities: None,
    };
    let decoded = Decoded {
        segmentation: image.into_segmentation(),
        format: "dicom_seg",
        provenance: Some(p),
    };
    let class = class
        .clone()
        .unwrap_or_else(|| "1.2.840.10008.5.1.4.1.1.66.4".into());
    match ingest(app.services(), upload, bytes, Some(decoded)).await {
        Ok(_) => Ok(Stored::Ok {
            class,
            instance: sop_uid,
            case_url: case_url(site, &case),
        }),
        // The database or the queue is the problem, not the instance: retry all.
        Err(e) if e.is_retryable() => Err(e.into()),
        Err(e) => {
            let reason = if e.is_too_large() {
                OUT_OF_RESOURCES
            } else {
                PROCESSING_FAILURE
            };
            Ok(failed(reason, e.into()))
        }
    }
}

/// The PS3.18 response: ReferencedSOPSequence for stored instances,
/// FailedSOPSequence with a FailureReason for the others; 200 when all were
/// stored, 202 when some, 409 when none.
fn answer(outcomes: Vec<Stored>) -> Response {
    let ui = |v: &Option<String>| match v {
        Some(v) => json!({"vr": "UI", "Value": [v]}),
        None => json!({"vr": "UI"}),
    };
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for outcome in outcomes {
        match outcome {
            Stored::Ok {
                class,
                instance,
                case_url,
            } => referenced.push(json!({
                "00081150": ui(&Some(class)),
                "00081155": ui(&Some(instance)),
                "00081190": {"vr": "UR", "Value": [case_url]},
            })),
            Stored::Failed {
                class,
                instance,
                reason,
                detail,
                ..
            } => {
                tracing::warn!(reason, %detail, "STOW-RS instance refused");
                // ErrorComment (LO, 64 characters) says why, as DICOM services do.
                let comment: String = detail.chars().take(64).collect();
                failed.push(json!({
                    "00081150": ui(&class),
                    "00081155": ui(&instance),
                    "00081197": {"vr": "US", "Value": [reason]},
                    "00000902": {"vr": "LO", "Value": [comment]},
                }))
            }
        }
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut body = serde_json::Map::new();
    if !referenced.is_empty() {
        body.insert("00081199".into(), json!({"vr": "SQ", "Value": referenced}));
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({"vr": "SQ", "Value": failed}));
    }
    let mut response = (status, axum::Json(Value::Object(body))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_keys_hash_study_and_series() {
        let plain = case_key(None, "1.2.3", "4.5.6");
        let keyed = case_key(Some("site secret"), "1.2.3", "4.5.6");
        assert!(plain.starts_with("dcm-") && plain.len() == 36);
        assert_ne!(plain, keyed);
        assert_eq!(plain, case_key(None, "1.2.3", "4.5.6"));
        assert_ne!(plain, case_key(None, "1.2.3", "4.5.7"));
        assert_eq!(key_from("Seg Net/v2"), "Seg_Net_v2");
    }
}
