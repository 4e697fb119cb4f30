//! Several readers: each reference upload names its reader by a pseudonym.

use segwatch::store::Role;
use serde_json::Value;

use crate::common::{TestApp, read_fixture};

/// Uploads a reference of case `case` as `reader` (none: the default); the status and body.
async fn reference(
    app: &TestApp,
    key: &str,
    case: &str,
    reader: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let query = reader.map_or(String::new(), |r| format!("?reader={r}"));
    let response = app
        .client
        .put(app.url(&format!("/v1/sites/s/cases/{case}/reference{query}")))
        .bearer_auth(key)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn identical_bytes_are_one_upload_per_reader() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let body = read_fixture("reference/cases/P09_ref.nii.gz");

    let (status, first) = reference(&app, &key, "c1", Some("r1"), &body).await;
    assert_eq!(
        (status, first["revision"].as_i64()),
        (202, Some(1)),
        "{first}"
    );
    // Another reader drawing the same voxels is a second reference.
    let (status, second) = reference(&app, &key, "c1", Some("reader-b"), &body).await;
    assert_eq!(
        (status, second["revision"].as_i64()),
        (202, Some(2)),
        "{second}"
    );
    assert_eq!(second["duplicate"], false);
    // The same reader sending the same bytes again changes nothing.
    let (status, again) = reference(&app, &key, "c1", Some("reader-b"), &body).await;
    assert_eq!(
        (status, again["revision"].as_i64()),
        (200, Some(2)),
        "{again}"
    );
    assert_eq!(again["duplicate"], true);
    // Without a reader the upload is the default reader's: a third reference,
    // and sent again a duplicate, as before readers existed.
    let (status, default) = reference(&app, &key, "c1", None, &body).await;
    assert_eq!(
        (status, default["revision"].as_i64()),
        (202, Some(3)),
        "{default}"
    );
    let (status, _) = reference(&app, &key, "c1", Some("default"), &body).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_reader_that_is_not_a_pseudonym_is_refused() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let body = read_fixture("reference/cases/P09_ref.nii.gz");
    for bad in [
        "Dr.%20Smith",
        "Smith%2C%20J",
        "John",
        "a%20b",
        "-r1",
        "abcdefghijklmnopq",
    ] {
        let (status, problem) = reference(&app, &key, "c1", Some(bad), &body).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert_eq!(
            problem["type"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next(),
            Some("invalid-reader"),
            "{bad}: {problem}"
        );
    }
    // A reader on a prediction is refused: predictions have model versions.
    let response = app
        .client
        .put(app.url("/v1/sites/s/cases/c1/prediction?model=m&model_version=v1&reader=r1"))
        .bearer_auth(&key)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("reader-on-prediction"),
        "{problem}"
    );
    // Nothing refused was stored.
    let (status, _) = app.get(&key, "/v1/sites/s/cases/c1").await;
    assert_eq!(status, 404);
}
