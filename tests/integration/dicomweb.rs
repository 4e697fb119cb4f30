//! DICOMweb STOW-RS: routing, the PS3.18 answer, idempotency, refusals.

use crate::common::{TestApp, read_fixture};
use base64::Engine;
use segwatch::store::Role;
use serde_json::Value;

const BOUNDARY: &str = "segwatch-test-boundary-0123456789-0123456789-0123456789-0123456789-xyz";

fn multipart(files: &[&str]) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = files
        .iter()
        .map(|file| read_fixture(&format!("dicom/{file}")))
        .collect();
    multipart_of(&parts)
}

fn multipart_of(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--").as_bytes());
    body
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("site1:{key}"))
    )
}

async fn stow(app: &TestApp, key: &str, path: &str, files: &[&str]) -> (u16, Value) {
    stow_body(app, key, path, multipart(files)).await
}

async fn stow_body(app: &TestApp, key: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("Authorization", basic(key))
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].clone();
    let answer = response.json().await.unwrap_or(Value::Null);
    if status < 400 || status == 409 {
        assert_eq!(content_type, "application/dicom+json", "{status} {answer}");
    }
    (status, answer)
}

fn items(answer: &Value, tag: &str) -> Vec<Value> {
    answer[tag]["Value"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacs_stores_ai_and_corrected_segs_which_are_scored_once() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("site1")).await;
    let expected: Value = serde_json::from_slice(&read_fixture("dicom/expected.json")).unwrap();
    let provenance = &expected["provenance"]["ai_binary.dcm"];

    let (status, answer) = stow(
        &app,
        &key,
        "/dicom-web/studies",
        &["ai_binary.dcm", "corrected_binary.dcm"],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let stored = items(&answer, "00081199");
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0]["00081155"]["Value"][0],
        provenance["sop_instance_uid"]
    );
    assert_eq!(
        stored[0]["00081150"]["Value"][0],
        "1.2.840.10008.5.1.4.1.1.66.4"
    );
    let case_url = stored[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        case_url,
        stored[1]["00081190"]["Value"][0].as_str().unwrap()
    );
    let case = case_url.rsplit('/').next().unwrap().to_owned();
    assert!(
        case.starts_with("dcm-"),
        "no DICOM UID in the case key: {case}"
    );

    let scored = app.wait_scored("site1", &case).await;
    assert_eq!(scored["status"], "scored", "{scored}");
    assert_eq!(scored["model"], "SegNet");
    assert_eq!(scored["model_version"], "2.1.0");
    let mean = expected["pairs"][0]["mean_dice"].as_f64().unwrap();
    assert!((scored["mean_dice"].as_f64().unwrap() - mean).abs() < 1e-9);

    // Sending the same instances again stores nothing new.
    let (status, answer) = stow(
        &app,
        &key,
        "/dicom-web/studies",
        &["ai_binary.dcm", "corrected_binary.dcm"],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, case_view) = app.get(&key, &case_url).await;
    assert_eq!(case_view["revisions"].as_array().unwrap().len(), 2);

    // The same instance re-encoded (explicit VR big endian): still the same SOP instance.
    let (status, _) = stow(&app, &key, "/dicom-web/studies", &["big_endian.dcm"]).await;
    assert_eq!(status, 200);
    let (_, case_view) = app.get(&key, &case_url).await;
    assert_eq!(case_view["revisions"].as_array().unwrap().len(), 2);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_follow_ps3_18() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("site1")).await;

    // One SEG and one CT image: 202, the CT in FailedSOPSequence (SOP class not supported).
    let (status, answer) = stow(
        &app,
        &key,
        "/dicom-web/studies",
        &["ai_binary.dcm", "bad_not_seg.dcm"],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(items(&answer, "00081199").len(), 1);
    let failed = items(&answer, "00081198");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["00081197"]["Value"][0], 0x0122);
    assert_eq!(
        failed[0]["00081150"]["Value"][0],
        "1.2.840.10008.5.1.4.1.1.2"
    );

    // Nothing storable: 409.
    let (status, answer) = stow(&app, &key, "/dicom-web/studies", &["bad_frame_count.dcm"]).await;
    assert_eq!(status, 409);
    assert_eq!(
        items(&answer, "00081198")[0]["00081197"]["Value"][0],
        0xC000
    );

    // An instance of another study than the URL names.
    let (status, answer) = stow(
        &app,
        &key,
        "/dicom-web/studies/1.2.3.4",
        &["corrected_binary.dcm"],
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        items(&answer, "00081198")[0]["00081197"]["Value"][0],
        0xA900
    );

    // Another media type: 415 problem.
    let response = app
        .client
        .post(app.url("/dicom-web/studies"))
        .header("Authorization", basic(&key))
        .header("Content-Type", "application/dicom")
        .body(read_fixture("dicom/ai_binary.dcm"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // No parts, and a wrong key.
    let response = app
        .client
        .post(app.url("/dicom-web/studies"))
        .header("Authorization", basic(&key))
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .body(format!("--{BOUNDARY}--"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, _) = stow(
        &app,
        "sw_wrong_key",
        "/dicom-web/studies",
        &["ai_binary.dcm"],
    )
    .await;
    assert_eq!(status, 401);
    let reader = app.key(Role::Read, None).await;
    let (status, _) = stow(&app, &reader, "/dicom-web/studies", &["ai_binary.dcm"]).await;
    assert_eq!(status, 403);
    // Refused instances are counted under the same reasons as REST refusals.
    let metrics = app.metrics().await;
    for reason in ["unreadable_segmentation", "frame_count", "other_study"] {
        assert!(
            metrics.contains(&format!(
                "segwatch_segmentations_received_total{{reason=\"{reason}\",role=\"dicomweb\",site=\"site1\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_rules_override_the_algorithm_type_and_case_keys_can_be_keyed() {
    let app = TestApp::start_with(|c| {
        c.dicomweb.case_key_secret = Some("site secret".into());
        c.dicomweb.role_rules = vec![segwatch::config::RoleRule {
            attribute: "content_label".into(),
            contains: "corrected".into(),
            role: "prediction".into(),
        }];
    })
    .await;
    let key = app.key(Role::Ingest, Some("site1")).await;
    // The corrected SEG (ContentLabel CORRECTED_BINARY) is MANUAL, but the rule
    // makes it a prediction of the model its manufacturer fields name.
    let (status, answer) = stow(&app, &key, "/dicom-web/studies", &["corrected_binary.dcm"]).await;
    assert_eq!(status, 200, "{answer}");
    let case_url = items(&answer, "00081199")[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, case) = app.get(&key, &case_url).await;
    assert_eq!(case["revisions"][0]["role"], "prediction");
    assert_eq!(case["status"], "waiting_for_reference");
    let (status, answer) = stow(&app, &key, "/dicom-web/studies", &["ai_binary.dcm"]).await;
    assert_eq!(status, 200);
    let keyed = items(&answer, "00081199")[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let other = TestApp::start().await;
    let other_key = other.key(Role::Ingest, Some("site1")).await;
    let (_, answer) = stow(&other, &other_key, "/dicom-web/studies", &["ai_binary.dcm"]).await;
    let plain = items(&answer, "00081199")[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(keyed, plain, "the secret changes the case key");
    other.finish().await;
    app.finish().await;
}

/// Posts `body` with chunked transfer encoding, `chunk` bytes per chunk, over a
/// raw connection (as Orthanc does), and returns the status and the answer.
async fn stow_chunked(app: &TestApp, key: &str, body: &[u8], chunk: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut request = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        basic(key)
    )
    .into_bytes();
    for piece in body.chunks(chunk) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text[9..12].parse().unwrap();
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_streamed_part_by_part_within_the_upload_limit() {
    let one = multipart(&["ai_binary.dcm"]);
    let two = multipart(&["corrected_binary.dcm", "ai_labelmap.dcm"]);
    // Room for one part and the delimiter that ends it, not for two.
    let limit = one.len().max(multipart(&["corrected_binary.dcm"]).len()) + 64;
    assert!(two.len() > limit + 4096);
    let app = TestApp::start_with(|c| c.limits.max_upload_bytes = limit).await;
    let key = app.key(Role::Ingest, Some("site1")).await;

    // Many small chunks make one instance.
    let (status, answer) = stow_chunked(&app, &key, &one, 997).await;
    assert_eq!(status, 200, "{answer}");
    let stored = items(&answer, "00081199");
    assert_eq!(stored.len(), 1);
    let case_url = stored[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let case = case_url.rsplit('/').next().unwrap().to_owned();

    // Over the limit by Content-Length: refused before reading, nothing stored.
    let (status, answer) = stow(
        &app,
        &key,
        "/dicom-web/studies",
        &["corrected_binary.dcm", "bad_not_seg.dcm"],
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    let (_, view) = app.get(&key, &case_url).await;
    assert_eq!(view["status"], "waiting_for_reference", "{view}");

    // Over the limit while streaming: the part completed before it is stored
    // (whole), the answer says so, and the part in progress is not.
    let (status, answer) = stow_chunked(&app, &key, &two, 4096).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["type"].as_str().unwrap().ends_with("/too-large"),
        "{answer}"
    );
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("the 1 instance(s) before it were stored"),
        "{detail}"
    );
    let scored = app.wait_scored("site1", &case).await;
    assert_eq!(scored["status"], "scored", "{scored}");
    app.finish().await;
}

/// A fixture SEG carrying a patient's identity, as a PACS would send it.
fn with_identity(file: &str) -> Vec<u8> {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, Tag, VR};
    let bytes = read_fixture(&format!("dicom/{file}"));
    let mut object = dicom_object::OpenFileOptions::new()
        .from_reader(&bytes[128..])
        .unwrap();
    for (tag, vr, value) in [
        (Tag(0x0010, 0x0010), VR::PN, PHI[0]),
        (Tag(0x0010, 0x0020), VR::LO, PHI[1]),
        (Tag(0x0010, 0x0030), VR::DA, PHI[2]),
        (Tag(0x0008, 0x0080), VR::LO, PHI[3]),
        (Tag(0x0008, 0x0050), VR::SH, PHI[4]),
    ] {
        object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    let mut out = Vec::new();
    object.write_all(&mut out).unwrap();
    for value in PHI {
        assert!(contains(&out, value), "the test file holds {value}");
    }
    out
}

const PHI: [&str; 5] = [
    "Doe^Jane",
    "PID-12345",
    "19700101",
    "St Elsewhere General Hospital",
    "ACC-20260512-0042",
];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_segs_carry_no_patient_identity_and_score_the_same() {
    use std::io::Read;

    let app =
        TestApp::start_with(|c| c.dicomweb.case_key_secret = Some("site secret".into())).await;
    let key = app.key(Role::Ingest, Some("site1")).await;
    let expected: Value = serde_json::from_slice(&read_fixture("dicom/expected.json")).unwrap();
    let mean = expected["pairs"][0]["mean_dice"].as_f64().unwrap();
    let (pred, reference) = (
        with_identity("ai_binary.dcm"),
        with_identity("corrected_binary.dcm"),
    );

    // Over REST.
    for (role, body) in [
        ("prediction", pred.clone()),
        ("reference", reference.clone()),
    ] {
        let response = app.upload(&key, "site1", "phi-rest", role, body).await;
        assert_eq!(response.status(), 202);
    }
    let scored = app.wait_scored("site1", "phi-rest").await;
    assert_eq!(scored["status"], "scored", "{scored}");
    assert!((scored["mean_dice"].as_f64().unwrap() - mean).abs() < 1e-9);
    // The duplicate check still recognises the bytes as sent.
    let again = app
        .upload(&key, "site1", "phi-rest", "reference", reference.clone())
        .await;
    assert_eq!(again.status(), 200);

    // Over STOW-RS.
    let (status, answer) = stow_body(
        &app,
        &key,
        "/dicom-web/studies",
        multipart_of(&[pred.clone(), reference.clone()]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let case_url = items(&answer, "00081199")[0]["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let case = case_url.rsplit('/').next().unwrap().to_owned();
    let scored = app.wait_scored("site1", &case).await;
    assert_eq!(scored["status"], "scored", "{scored}");
    assert!((scored["mean_dice"].as_f64().unwrap() - mean).abs() < 1e-9);
    // Idempotent on the SOP instance, stored hashed.
    let (status, _) = stow_body(
        &app,
        &key,
        "/dicom-web/studies",
        multipart_of(std::slice::from_ref(&pred)),
    )
    .await;
    assert_eq!(status, 200);
    let (_, view) = app.get(&key, &case_url).await;
    assert_eq!(view["revisions"].as_array().unwrap().len(), 2);

    // What Postgres holds: four segmentations, none with an identifier.
    let mut forbidden: Vec<String> = PHI.iter().map(|s| s.to_string()).collect();
    for file in ["ai_binary.dcm", "corrected_binary.dcm"] {
        let p = &expected["provenance"][file];
        for field in [
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "referenced_series_instance_uid",
            "frame_of_reference_uid",
            "device_serial_number",
        ] {
            forbidden.push(p[field].as_str().unwrap().to_owned());
        }
    }
    for value in expected["phi"]["forbidden_strings"].as_array().unwrap() {
        forbidden.push(value.as_str().unwrap().to_owned());
    }
    let rows: Vec<(Vec<u8>, String)> = app
        .db
        .rows(
            "SELECT f.content, coalesce(CAST(s.provenance AS TEXT), '') || CAST(s.acquisition AS TEXT)
                    || coalesce(s.sop_instance_uid, '')
             FROM segmentations s JOIN segmentation_contents f ON f.segmentation_id = s.id",
        )
        .await;
    assert_eq!(rows.len(), 4);
    for (content, metadata) in &rows {
        let mut stored = Vec::new();
        flate2::read::GzDecoder::new(&content[..])
            .read_to_end(&mut stored)
            .unwrap();
        assert!(stored.len() > 132 && &stored[128..132] == b"DICM");
        for value in &forbidden {
            assert!(!contains(&stored, value), "the stored file holds {value}");
            assert!(
                !metadata.contains(value.as_str()),
                "the stored metadata holds {value}"
            );
        }
        assert!(contains(&stored, "YES"), "PatientIdentityRemoved");
    }
    app.finish().await;
}
