//! RFC 9457 problem details: every error is `application/problem+json` with a
//! specific type, title and detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::formats::FormatError;
use crate::ingest::{IngestError, ProbabilitiesError};
use crate::metrics::pairing::PairingError;
use crate::metrics::probabilistic::ProbabilityError;
use crate::store::{ModelBoundExceeded, StoreError};

/// A problem answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A stable identifier of the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Seconds to wait before retrying (503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://segwatch.dev/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, slug, title, detail)
    }

    /// Refuses text holding a NUL character. PostgreSQL cannot store one and
    /// SQLite can: checked here so that both stores answer alike.
    pub fn refuse_nul<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<(), Problem> {
        match texts.into_iter().any(|t| t.contains('\0')) {
            true => Err(Problem::bad_request(
                "invalid-value",
                "Invalid value",
                "text must not contain NUL characters",
            )),
            false => Ok(()),
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This key may not do that",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Problem {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service temporarily unavailable",
                detail,
            )
        }
    }

    /// The short reason used as a metric label.
    pub fn reason(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or("error")
    }
}

/// Turns error responses that are not problem+json yet (the plain-text
/// rejections of axum's JSON, query, path and body-limit extractors) into
/// problem+json with the same status, so every error has one shape. Headers
/// such as `Allow` are kept.
pub async fn problem_for_rejections(response: Response) -> Response {
    let status = response.status();
    // Rejections are text/plain or have no body; other media types (problem+json,
    // STOW-RS's dicom+json failure lists) are answers already.
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection messages are short; anything longer is cut.
    let text = axum::body::to_bytes(body, REJECTION_TEXT_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (slug, title) = match status {
        StatusCode::BAD_REQUEST => ("invalid-request", "Invalid request"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "Request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid-body", "Invalid request body"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service temporarily unavailable"),
        _ => ("error", "Request failed"),
    };
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut problem = Problem::new(status, slug, title, detail);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem.retry_after = Some(5);
    }
    let mut response = problem.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in response.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    *response.headers_mut() = parts.headers;
    response
}

/// Bytes of a plain-text rejection kept in the problem's detail.
const REJECTION_TEXT_LIMIT: usize = 4096;

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Problem {
    /// A 500 that is logged; `detail` must not carry patient data.
    pub fn internal(detail: impl Into<String>) -> Problem {
        let detail = detail.into();
        tracing::error!(detail, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }
}

impl From<IngestError> for Problem {
    fn from(err: IngestError) -> Problem {
        let detail = err.to_string();
        match err {
            IngestError::QueueFull { .. } => Problem::unavailable(detail, 30),
            IngestError::Store(e) => e.into(),
            IngestError::Compute(e) => e.into(),
            IngestError::Format(e) => e.into(),
            IngestError::Pairing(e) => e.into(),
            IngestError::Probabilities(e) => probabilities_problem(e, detail),
            IngestError::TooManyStructures { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too-many-structures",
                "Too many structures",
                detail,
            ),
            IngestError::StoredTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Upload too large",
                detail,
            ),
            IngestError::StoredGrid(_) => {
                tracing::error!(error = %detail, "ingest");
                Problem::internal("the request could not be completed")
            }
            IngestError::ModelBound { exceeded, .. } => {
                let (kind, title) = match exceeded {
                    ModelBoundExceeded::Models { .. } => ("too-many-models", "Too many models"),
                    ModelBoundExceeded::Versions { .. } => {
                        ("too-many-model-versions", "Too many model versions")
                    }
                    ModelBoundExceeded::Structures { .. } => {
                        ("too-many-structures", "Too many structures")
                    }
                };
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, kind, title, detail)
            }
        }
    }
}

/// The problem of a probability map refused at ingest: a slug of its own for
/// each way it can fail to fit its labels; a file it cannot read is
/// `invalid-probabilities`, whatever the reason (the detail says it).
fn probabilities_problem(err: ProbabilitiesError, detail: String) -> Problem {
    let unprocessable =
        |slug, title| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title, &*detail);
    match err {
        ProbabilitiesError::NotLabelMap => unprocessable(
            "probabilities-need-label-map",
            "Probabilities need a NIfTI label map",
        ),
        ProbabilitiesError::Invalid(e) => match e {
            ProbabilityError::Format(FormatError::TooLarge(_)) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Probabilities too large",
                &*detail,
            ),
            ProbabilityError::Format(FormatError::Value(_))
            | ProbabilityError::OutOfRange { .. } => {
                unprocessable("probabilities-out-of-range", "Probability out of range")
            }
            ProbabilityError::Grid(_) => unprocessable(
                "probabilities-grid-mismatch",
                "Probabilities on another grid than the labels",
            ),
            ProbabilityError::Channels { .. } => unprocessable(
                "probabilities-channels",
                "One probability channel per structure",
            ),
            ProbabilityError::Format(_)
            | ProbabilityError::Bins(_)
            | ProbabilityError::Counts(_)
            | ProbabilityError::Reference(_) => {
                unprocessable("invalid-probabilities", "Unreadable probability map")
            }
        },
    }
}

impl From<crate::compute::ComputePanic> for Problem {
    fn from(err: crate::compute::ComputePanic) -> Problem {
        Problem::internal(err.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Problem {
        if let StoreError::HistoryTooLong { .. } = err {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "history-too-long",
                "History too long to replay",
                err.to_string(),
            );
        }
        if let Some(detail) = err.invalid_input() {
            return Problem::bad_request("invalid-value", "Invalid value", detail);
        }
        if err.is_transient() {
            Problem::unavailable("the database is unreachable; try again shortly", 5)
        } else {
            tracing::error!(error = %err, "store error");
            Problem::internal("the request could not be completed")
        }
    }
}

impl From<FormatError> for Problem {
    fn from(err: FormatError) -> Problem {
        let detail = err.to_string();
        let (status, slug, title) = match &err {
            FormatError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Segmentation too large",
            ),
            FormatError::Gzip(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "corrupt-gzip",
                "Corrupt gzip data",
            ),
            FormatError::Truncated(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "truncated",
                "Truncated file",
            ),
            FormatError::Datatype(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported-datatype",
                "Unsupported datatype",
            ),
            FormatError::TransferSyntax(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported-transfer-syntax",
                "Unsupported transfer syntax",
            ),
            FormatError::FrameCount(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "frame-count",
                "Frame count mismatch",
            ),
            FormatError::Geometry(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "geometry",
                "Inconsistent geometry",
            ),
            FormatError::Value(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-labels",
                "Invalid label values",
            ),
            FormatError::Header(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-header",
                "Invalid header",
            ),
            FormatError::NotNifti(_)
            | FormatError::NotSegmentation(_)
            | FormatError::Dicom(_)
            | FormatError::Io(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unreadable-segmentation",
                "Not a readable NIfTI or DICOM SEG segmentation",
            ),
        };
        Problem::new(status, slug, title, detail)
    }
}

impl From<PairingError> for Problem {
    fn from(err: PairingError) -> Problem {
        let detail = format!(
            "{err}{}",
            std::error::Error::source(&err)
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
        match err {
            PairingError::Unknown(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-structure",
                "Unknown structure",
                detail,
            ),
            PairingError::Grid(_) | PairingError::Coverage(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "grid-mismatch",
                "Grid differs from the other segmentation of the case",
                detail,
            ),
        }
    }
}

/// Parses a request body that must be one JSON object into `T`. serde reads a
/// struct from a JSON array too (`[null]` as `{"note": null}`), so anything but
/// an object is refused first. The error is the detail for a 400.
pub fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}
