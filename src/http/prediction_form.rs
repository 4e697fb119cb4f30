//! A prediction sent with its probabilities: a `multipart/form-data` body
//! with a `labels` part (the label NIfTI or DICOM SEG, as a single-body
//! upload sends it) and a `probabilities` part (a float NIfTI, one channel per
//! structure). Parts are split without copying the body.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};

use super::multipart::{Part, PartSplitter};
use super::problem::Problem;

/// The name of the part holding the label file.
pub const LABELS_PART: &str = "labels";
/// The name of the part holding the probability map.
pub const PROBABILITIES_PART: &str = "probabilities";

/// The files of a form-data prediction.
#[derive(Debug)]
pub struct PredictionParts {
    pub labels: Bytes,
    pub probabilities: Option<Bytes>,
}

/// The boundary of a `multipart/form-data` Content-Type; None for any other
/// media type (or none).
pub fn form_boundary(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    let mut params = value.split(';').map(str::trim);
    if !params
        .next()
        .unwrap_or_default()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return Ok(None);
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .map(Some)
        .ok_or_else(|| invalid("the Content-Type has no boundary".into()))
}

/// Splits a form-data body into its labels and probabilities: 400 when the
/// body is not complete multipart (a truncated upload), when a part has no
/// name, another name, or comes twice, and when the labels are missing.
pub fn split(body: Bytes, boundary: &str) -> Result<PredictionParts, Problem> {
    let mut splitter = PartSplitter::new(boundary);
    let parts = splitter.push_whole(body).map_err(invalid)?;
    splitter.finish().map_err(invalid)?;
    let (mut labels, mut probabilities) = (None, None);
    for part in parts {
        let name = part_name(&part)?;
        let slot = match name.as_str() {
            LABELS_PART => &mut labels,
            PROBABILITIES_PART => &mut probabilities,
            other => {
                return Err(invalid(format!(
                    "part {other:?}: the parts are {LABELS_PART:?} and {PROBABILITIES_PART:?}"
                )));
            }
        };
        if slot.replace(part.content).is_some() {
            return Err(invalid(format!("part {name:?} is sent twice")));
        }
    }
    let labels = labels.filter(|l| !l.is_empty()).ok_or_else(|| {
        Problem::bad_request(
            "missing-labels-part",
            "Missing labels part",
            format!(
                "a multipart prediction needs a non-empty {LABELS_PART:?} part holding the label NIfTI or DICOM SEG"
            ),
        )
    })?;
    let probabilities = probabilities.filter(|p| !p.is_empty());
    Ok(PredictionParts {
        labels,
        probabilities,
    })
}

/// The body a client sends for a prediction with its probabilities, with
/// `Content-Type: multipart/form-data; boundary=BOUNDARY` (the boundary must
/// not occur in either file).
pub fn form_body(labels: &[u8], probabilities: &[u8], boundary: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(labels.len() + probabilities.len() + 512);
    for (name, content) in [(LABELS_PART, labels), (PROBABILITIES_PART, probabilities)] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// The `name` of a part's `Content-Disposition: form-data` header.
fn part_name(part: &Part) -> Result<String, Problem> {
    let headers = std::str::from_utf8(&part.headers)
        .map_err(|_| invalid("a part's headers are not UTF-8".into()))?;
    headers
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("content-disposition"))
        .flat_map(|(_, value)| value.split(';').skip(1))
        .filter_map(|param| param.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("name"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .ok_or_else(|| invalid("a part has no Content-Disposition: form-data; name=…".into()))
}

fn invalid(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-multipart",
        "Invalid multipart/form-data body",
        detail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, &[u8])], close: bool) -> Bytes {
        let mut body = Vec::new();
        for (name, content) in parts {
            body.extend_from_slice(
                format!("--XY\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.nii\"\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        if close {
            body.extend_from_slice(b"--XY--\r\n");
        }
        Bytes::from(body)
    }

    #[test]
    fn splits_labels_and_probabilities_and_refuses_the_rest() {
        let parts = split(
            form(&[("probabilities", b"p"), ("labels", b"l")], true),
            "XY",
        )
        .unwrap();
        assert_eq!(parts.labels, Bytes::from_static(b"l"));
        assert_eq!(parts.probabilities, Some(Bytes::from_static(b"p")));
        let encoded = split(Bytes::from(form_body(b"l", b"p", "XY")), "XY").unwrap();
        assert_eq!(
            (encoded.labels, encoded.probabilities),
            (Bytes::from_static(b"l"), Some(Bytes::from_static(b"p")))
        );
        let only = split(form(&[("labels", b"l")], true), "XY").unwrap();
        assert_eq!(only.probabilities, None);
        let slug = |body, boundary| {
            let problem = split(body, boundary).unwrap_err();
            (
                problem.status,
                problem.kind.rsplit('/').next().unwrap().to_owned(),
            )
        };
        let missing = (400, "missing-labels-part".to_owned());
        let invalid = (400, "invalid-multipart".to_owned());
        assert_eq!(slug(form(&[("probabilities", b"p")], true), "XY"), missing);
        assert_eq!(slug(form(&[("labels", b"")], true), "XY"), missing);
        assert_eq!(slug(form(&[("labels", b"l")], false), "XY"), invalid);
        assert_eq!(slug(form(&[("labels", b"l")], true), "ZZ"), invalid);
        assert_eq!(slug(form(&[("mask", b"l")], true), "XY"), invalid);
        assert_eq!(
            slug(form(&[("labels", b"l"), ("labels", b"m")], true), "XY"),
            invalid
        );
        assert_eq!(
            slug(Bytes::from_static(b"--XY\r\n\r\nl\r\n--XY--"), "XY"),
            invalid
        );
    }

    #[test]
    fn reads_the_form_boundary() {
        let mut headers = HeaderMap::new();
        assert_eq!(form_boundary(&headers).unwrap(), None);
        headers.insert(
            header::CONTENT_TYPE,
            "application/octet-stream".parse().unwrap(),
        );
        assert_eq!(form_boundary(&headers).unwrap(), None);
        headers.insert(
            header::CONTENT_TYPE,
            "Multipart/Form-Data; boundary=\"a b\"".parse().unwrap(),
        );
        assert_eq!(form_boundary(&headers).unwrap().as_deref(), Some("a b"));
        headers.insert(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        assert!(form_boundary(&headers).is_err());
    }
}
