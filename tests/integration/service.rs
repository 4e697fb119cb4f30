//! The service against a real Postgres, each test in its own database.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{ServeProcess, TestApp, TestDb, read_fixture, upload, wait_scored};
use segwatch::formats::{Limits, decode, nifti::encode};
use segwatch::metrics::pairing::{Request, evaluate};
use segwatch::store::Role;
use segwatch::volume::{Grid, LabelVolume, Labels};
use serde_json::{Value, json};

/// A 16×16×8 volume with a cube of label 1 (and 2) shifted by `shift`.
pub(crate) fn cubes(shift: usize, side: usize) -> Vec<u8> {
    let grid = Grid::axis_aligned([16, 16, 8], [1.0, 1.0, 2.0], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y, z) = (i % 16, (i / 16) % 16, i / 256);
            let in_cube = |lo: usize| {
                (lo..lo + side).contains(&x) && (lo..lo + side).contains(&y) && (1..6).contains(&z)
            };
            if in_cube(2 + shift) {
                1
            } else if in_cube(9) {
                2
            } else {
                0
            }
        })
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

/// The service on `db` in this process, without migrating; its base URL.
async fn serve_without_migrating(db: &TestDb) -> String {
    let mut config = crate::common::test_config(db);
    config.migrate = false;
    let router = segwatch::service::launch(std::sync::Arc::new(config))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    db.scalar::<i64>(sql).await
}

/// What `segwatch eval` computes for the same files.
fn eval_json(pred: &[u8], reference: &[u8]) -> Vec<Value> {
    let (p, r) = (
        decode(pred, &Limits::default()).unwrap(),
        decode(reference, &Limits::default()).unwrap(),
    );
    let evaluation = evaluate(&p, &r, &Request::default()).unwrap();
    evaluation
        .structures
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_equal_eval_in_either_upload_order_for_nifti_and_seg() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("site1")).await;
    let pairs = [
        (
            "reference/cases/P09_pred.nii.gz",
            "reference/cases/P09_ref.nii.gz",
        ),
        ("dicom/ai_binary.dcm", "dicom/corrected_binary.dcm"),
        // The reference labels both kidneys "Kidney": results need unique names.
        ("dicom/corrected_binary.dcm", "dicom/ai_binary.dcm"),
    ];
    for (i, (pred_file, ref_file)) in pairs.iter().enumerate() {
        let (pred, reference) = (read_fixture(pred_file), read_fixture(ref_file));
        for reference_first in [false, true] {
            let case = format!("case-{i}-{reference_first}");
            let order = if reference_first {
                [
                    ("reference", reference.clone()),
                    ("prediction", pred.clone()),
                ]
            } else {
                [
                    ("prediction", pred.clone()),
                    ("reference", reference.clone()),
                ]
            };
            let first = app
                .upload(&key, "site1", &case, order[0].0, order[0].1.clone())
                .await;
            assert_eq!(first.status(), 202);
            let (_, waiting) = app
                .get(&key, &format!("/v1/sites/site1/cases/{case}"))
                .await;
            let expected_wait = if reference_first {
                "waiting_for_prediction"
            } else {
                "waiting_for_reference"
            };
            assert_eq!(waiting["status"], expected_wait);
            let second = app
                .upload(&key, "site1", &case, order[1].0, order[1].1.clone())
                .await;
            assert_eq!(second.status(), 202);
            let body: Value = second.json().await.unwrap();
            assert_eq!(body["queued"], true);

            let scored = app.wait_scored("site1", &case).await;
            assert_eq!(scored["status"], "scored", "{scored}");
            let got = scored["structures"].as_array().unwrap();
            let want = eval_json(&pred, &reference);
            assert_eq!(got.len(), want.len(), "{case}");
            for (g, w) in got.iter().zip(&want) {
                for field in [
                    "label",
                    "code",
                    "empty",
                    "pred_voxels",
                    "ref_voxels",
                    "tp",
                    "fp",
                    "fn",
                    "dice",
                    "iou",
                    "precision",
                    "recall",
                    "hd_mm",
                    "hd95_mm",
                    "assd_mm",
                    "masd_mm",
                    "nsd",
                    "pred_volume_ml",
                ] {
                    assert_eq!(g[field], w[field], "{case} {field}");
                }
            }
        }
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bytes_are_idempotent_and_a_new_reference_is_a_new_revision() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    assert_eq!(
        app.upload(&key, "s", "c", "prediction", cubes(1, 4))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.upload(&key, "s", "c", "reference", cubes(0, 4))
            .await
            .status(),
        202
    );
    let first = app.wait_scored("s", "c").await;
    // Both cubes have 4 × 4 × 5 = 80 voxels; label 1 moved one voxel in x and
    // y keeps 3 × 3 × 5 = 45, so equal weights give 2·(45 + 80) / (160 + 160).
    let generalized = first["generalized_dice"].as_f64().unwrap();
    assert!((generalized - 250.0 / 320.0).abs() < 1e-12, "{first}");
    let again = app.upload(&key, "s", "c", "reference", cubes(0, 4)).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (again["duplicate"].clone(), again["revision"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM segmentations").await,
        2
    );
    assert_eq!(count(&app.db, "SELECT count(*) FROM jobs").await, 1);

    // A corrected reference: revision 2, scored again, the older result kept.
    let revised = app.upload(&key, "s", "c", "reference", cubes(1, 4)).await;
    assert_eq!(revised.status(), 202);
    let revised: Value = revised.json().await.unwrap();
    assert_eq!(revised["revision"], 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&app.db, "SELECT count(*) FROM results").await < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = app.wait_scored("s", "c").await;
    assert!(first["structures"][0]["dice"].as_f64().unwrap() < 1.0);
    assert_eq!(second["structures"][0]["dice"], 1.0);
    assert_eq!(second["revisions"].as_array().unwrap().len(), 3);
    // Only the newer result is the case's latest: listings show it alone.
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM results WHERE latest").await,
        1
    );
    let (_, listed) = app.get(&key, "/v1/sites/s/cases?limit=10").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["mean_dice"], second["mean_dice"]);
    // The rollups hold both results, as the rolling windows always counted them.
    let rolled: Vec<(String, i64, f64)> = app
        .db
        .rows("SELECT structure, cases, dice_sum FROM dice_daily ORDER BY structure")
        .await;
    let dice = |case: &Value, structure: &str| {
        if structure == "all" {
            return case["mean_dice"].as_f64().unwrap();
        }
        let structures = case["structures"].as_array().unwrap();
        let scored = structures.iter().find(|s| s["name"] == structure);
        scored.unwrap()["dice"].as_f64().unwrap()
    };
    assert_eq!(rolled.len(), 3, "{rolled:?}");
    for (structure, cases, sum) in &rolled {
        assert_eq!(*cases, 2, "{structure}");
        let expected = dice(&first, structure) + dice(&second, structure);
        assert!((sum - expected).abs() < 1e-9, "{rolled:?}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_the_right_4xx_and_store_nothing() {
    let app = TestApp::start_with(|c| {
        c.limits.max_voxels = 5000;
    })
    .await;
    let key = app.key(Role::Ingest, Some("s1")).await;
    let other_site = app.key(Role::Ingest, Some("s2")).await;
    let reader = app.key(Role::Read, None).await;
    // A valid prediction to pair a mismatching reference with.
    assert_eq!(
        app.upload(&key, "s1", "paired", "prediction", cubes(0, 4))
            .await
            .status(),
        202
    );
    let schema = json!({"structures": [{"label": 1, "name": "liver"}], "unknown_labels": "reject"});
    assert_eq!(app.put_schema("m", "strict", &schema).await, 201);

    let mut corrupt = cubes(0, 4);
    let n = corrupt.len();
    for b in &mut corrupt[20..n - 8] {
        *b ^= 0x55;
    }
    let big = encode(
        &LabelVolume::new(
            Grid::axis_aligned([20, 20, 20], [1.0; 3], 3),
            Labels::U8(vec![1; 8000]),
        )
        .unwrap(),
        true,
    );
    let planar = read_fixture("reference/cases/P10_ref.nii.gz");
    let send = |key: String,
                case: &'static str,
                role: &'static str,
                query: &'static str,
                body: Vec<u8>| {
        let request = app
            .client
            .put(app.url(&format!("/v1/sites/s1/cases/{case}/{role}{query}")))
            .body(body);
        let request = if key.is_empty() {
            request
        } else {
            request.bearer_auth(key)
        };
        request.send()
    };
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            // Content-Encoding gzip over data that is not gzip.
            app.client
                .put(app.url("/v1/sites/s1/cases/bad0/prediction?model=m&model_version=v1"))
                .bearer_auth(&key)
                .header("content-encoding", "gzip")
                .body(b"this is not gzip data at all".to_vec())
                .send()
                .await
                .unwrap(),
            400,
            "unreadable-body",
        ),
        (
            send(
                key.clone(),
                "bad1",
                "prediction",
                "?model=m&model_version=v1",
                corrupt,
            )
            .await
            .unwrap(),
            422,
            "corrupt-gzip",
        ),
        (
            send(
                key.clone(),
                "bad2",
                "prediction",
                "?model=m&model_version=v1",
                b"not an image".to_vec(),
            )
            .await
            .unwrap(),
            422,
            "unreadable-segmentation",
        ),
        (
            send(key.clone(), "paired", "reference", "", planar)
                .await
                .unwrap(),
            422,
            "grid-mismatch",
        ),
        (
            send(
                key.clone(),
                "bad3",
                "prediction",
                "?model=m&model_version=strict",
                cubes(0, 4),
            )
            .await
            .unwrap(),
            422,
            "unknown-structure",
        ),
        (
            send(
                key.clone(),
                "bad4",
                "prediction",
                "?model=m&model_version=v1",
                big,
            )
            .await
            .unwrap(),
            413,
            "too-large",
        ),
        (
            send(
                other_site.clone(),
                "bad5",
                "prediction",
                "?model=m&model_version=v1",
                cubes(0, 4),
            )
            .await
            .unwrap(),
            403,
            "forbidden",
        ),
        (
            send(
                reader.clone(),
                "bad5",
                "prediction",
                "?model=m&model_version=v1",
                cubes(0, 4),
            )
            .await
            .unwrap(),
            403,
            "forbidden",
        ),
        (
            send(
                String::new(),
                "bad6",
                "prediction",
                "?model=m&model_version=v1",
                cubes(0, 4),
            )
            .await
            .unwrap(),
            401,
            "unauthorized",
        ),
        (
            send(
                "sw_nope_nope".into(),
                "bad7",
                "prediction",
                "?model=m&model_version=v1",
                cubes(0, 4),
            )
            .await
            .unwrap(),
            401,
            "unauthorized",
        ),
        (
            send(key.clone(), "bad8", "prediction", "", cubes(0, 4))
                .await
                .unwrap(),
            400,
            "missing-model",
        ),
        (
            send(
                key.clone(),
                "bad9",
                "prediction",
                "?model=m&model_version=v1",
                Vec::new(),
            )
            .await
            .unwrap(),
            400,
            "empty-body",
        ),
    ];
    for (response, status, kind) in cases {
        assert_eq!(response.status().as_u16(), status, "{kind}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["type"].as_str().unwrap().ends_with(kind),
            "{problem}"
        );
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        if kind == "unknown-structure" {
            assert!(
                problem["detail"].as_str().unwrap().contains("label 2"),
                "{problem}"
            );
        }
    }
    // Nothing stored but the one valid prediction.
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM segmentations").await,
        1
    );
    assert_eq!(count(&app.db, "SELECT count(*) FROM cases").await, 1);
    assert_eq!(count(&app.db, "SELECT count(*) FROM jobs").await, 0);
    // An ingest key cannot read another site either.
    let (status, _) = app.get(&other_site, "/v1/sites/s1/cases/paired").await;
    assert_eq!(status, 403);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_and_unreachable_database_answer_503() {
    let app = TestApp::start_with(|c| c.limits.max_queue_depth = 0).await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let response = app.upload(&key, "s", "c", "prediction", cubes(0, 4)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    app.finish().await;

    // A database that does not answer: 503 fast, health still up.
    let down = TestDb::Postgres {
        name: "unused".into(),
        url: "postgres://postgres@127.0.0.1:1/none".into(),
    };
    let base = serve_without_migrating(&down).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = upload(
        &client,
        &base,
        "sw_a_b",
        "s",
        "c",
        "prediction",
        cubes(0, 4),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worst_cases_come_first() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    for (case, shift) in [("good", 0), ("bad", 2), ("fair", 1)] {
        assert_eq!(
            app.upload(&key, "s", case, "prediction", cubes(shift, 4))
                .await
                .status(),
            202
        );
        assert_eq!(
            app.upload(&key, "s", case, "reference", cubes(0, 4))
                .await
                .status(),
            202
        );
        app.wait_scored("s", case).await;
    }
    let (status, list) = app
        .get(
            &key,
            "/v1/sites/s/cases?structure=label_1&order=dice&limit=10",
        )
        .await;
    assert_eq!(status, 200);
    let order: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["case"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["bad", "fair", "good"]);
    assert_eq!(list[0]["structures"].as_array().unwrap().len(), 1);
    let (status, _) = app.get(&key, "/v1/sites/s/cases?limit=0").await;
    assert_eq!(status, 400);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_document_docs_and_health() {
    let app = TestApp::start().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Every route the service answers, documented.
    for path in [
        "/v1/sites/{site}/cases/{case}/prediction",
        "/v1/sites/{site}/cases/{case}/reference",
        "/v1/sites/{site}/cases/{case}",
        "/v1/sites/{site}/cases",
        "/v1/models/{model}/versions/{version}/structures",
        "/v1/models/{model}/compare",
        "/v1/models/{model}/versions/{version}/gate",
        "/v1/models/{model}/versions/{version}/gates",
        "/v1/models/{model}/versions/{version}/baseline",
        "/v1/models/{model}/versions/{version}/baseline/freeze",
        "/v1/incidents",
        "/v1/incidents/{id}/ack",
        "/v1/incidents/{id}/strata",
        "/v1/incidents/{id}/history",
        "/v1/drift/plan",
        "/v1/alertmanager/webhook",
        "/dicom-web/studies",
        "/dicom-web/studies/{study}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing");
    }
    // A case's structures: eval's fields and the nullable probabilistic ones.
    let schemas = &spec["components"]["schemas"];
    let structures = &schemas["CaseView"]["properties"]["structures"]["items"]["$ref"];
    assert_eq!(structures, "#/components/schemas/StructureView");
    let properties = schemas["StructureView"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|part| part["properties"].as_object())
        .unwrap();
    for field in ["soft_dice", "brier", "ece", "ece_bins", "reliability"] {
        let types = properties[field]["type"].as_array().unwrap();
        assert!(types.contains(&Value::from("null")), "{field}: {types:?}");
    }
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("openapi"));
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Metrics need a key.
    assert_eq!(
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("segwatch_build_info"));
    // Failure counters start at 0 for every reason, so dashboards show 0, not "no data".
    for reason in [
        "transient",
        "invalid_file",
        "grid_mismatch",
        "unknown_structure",
    ] {
        assert!(
            metrics.contains(&format!(
                "segwatch_jobs_failed_total{{reason=\"{reason}\"}} 0"
            )),
            "{reason}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_command_creates_lists_and_revokes() {
    let app = TestApp::start().await;
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_segwatch"))
            .args(args)
            .env(app.db.env().0, app.db.env().1)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let token = cli(&[
        "keys", "create", "--role", "ingest", "--site", "s9", "--label", "pacs",
    ])
    .trim()
    .to_owned();
    assert!(token.starts_with("sw_"));
    let id = token.split('_').nth(1).unwrap().to_owned();
    let listed = cli(&["keys", "list"]);
    assert!(
        listed.contains(&id)
            && listed.contains("s9")
            && !listed.contains(token.split('_').nth(2).unwrap())
    );
    assert_eq!(
        app.upload(&token, "s9", "c", "prediction", cubes(0, 4))
            .await
            .status(),
        202
    );
    // An ingest key reads its own site's series on /metrics, not another's.
    let other = app.key(Role::Ingest, Some("s8")).await;
    assert_eq!(
        app.upload(&other, "s8", "c", "prediction", cubes(0, 4))
            .await
            .status(),
        202
    );
    let own_metrics = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(own_metrics.contains(r#"site="s9""#) && !own_metrics.contains(r#"site="s8""#));
    assert!(app.metrics().await.contains(r#"site="s8""#));
    // Revoked by another process: refused within the key cache's lifetime.
    cli(&["keys", "revoke", &id]);
    let revoked = Instant::now();
    for attempt in 0.. {
        let case = format!("after-revoke-{attempt}");
        let status = app
            .upload(&token, "s9", &case, "prediction", cubes(0, 4))
            .await
            .status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 202);
        assert!(
            revoked.elapsed() < segwatch::store::KEY_CACHE_TTL + Duration::from_secs(2),
            "a revoked key still works after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The secret is stored hashed.
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let stored: Vec<u8> = app
        .db
        .scalar(&format!(
            "SELECT secret_sha256 FROM api_keys WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(
        stored,
        segwatch::store::hash_secret(token.split('_').nth(2).unwrap())
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_score_every_pair_exactly_once() {
    let db = TestDb::new().await;
    let a = ServeProcess::start(&db, &[]).await;
    let b = ServeProcess::start(&db, &[]).await;
    let store = db.store();
    let key = store.create_key(Role::Admin, None, None).await.unwrap();
    let client = reqwest::Client::new();
    let pairs = 200;
    let uploads = (0..pairs).flat_map(|i| {
        let bases = [a.base.clone(), b.base.clone()];
        let (client, key) = (client.clone(), key.clone());
        ["prediction", "reference"]
            .into_iter()
            .enumerate()
            .map(move |(j, role)| {
                let (client, key, base) = (client.clone(), key.clone(), bases[(i + j) % 2].clone());
                async move {
                    let body = if role == "prediction" {
                        cubes(i % 3, 4)
                    } else {
                        cubes(0, 4)
                    };
                    upload(
                        &client,
                        &base,
                        &key,
                        "site",
                        &format!("case{i}"),
                        role,
                        body,
                    )
                    .await
                    .status()
                    .as_u16()
                }
            })
    });
    let statuses = futures_join_all(uploads.collect()).await;
    assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
    for i in 0..pairs {
        let case = wait_scored(&client, &a.base, &key, "site", &format!("case{i}")).await;
        assert_eq!(case["status"], "scored");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM results").await,
        pairs as i64
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT case_id) FROM results").await,
        pairs as i64
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE status = 'done'").await,
        pairs as i64
    );
    drop((a, b));
    db.drop_db().await;
}

/// Runs futures concurrently, 64 at a time.
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<u16> {
    let mut results = Vec::new();
    let mut futures = futures.into_iter();
    loop {
        let batch: Vec<_> = futures.by_ref().take(64).map(tokio::spawn).collect();
        if batch.is_empty() {
            return results;
        }
        for handle in batch {
            results.push(handle.await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_abandoned_by_a_crashed_worker_is_scored_once_after_its_lease() {
    let db = TestDb::new().await;
    let mut crashing = ServeProcess::start(
        &db,
        &[
            ("SEGWATCH_FAILPOINT", "abort_after_claim"),
            ("SEGWATCH_LEASE_SECS", "2"),
        ],
    )
    .await;
    let store = db.store();
    let key = store.create_key(Role::Admin, None, None).await.unwrap();
    let client = reqwest::Client::new();
    assert_eq!(
        upload(
            &client,
            &crashing.base,
            &key,
            "s",
            "c",
            "prediction",
            cubes(1, 4)
        )
        .await
        .status(),
        202
    );
    // The upload commits before its job can be claimed; the failpoint may abort
    // the process before the 202 is written, so a dropped answer is fine here.
    let reference = client
        .put(format!("{}/v1/sites/s/cases/c/reference", crashing.base))
        .bearer_auth(&key)
        .body(cubes(0, 4))
        .send()
        .await;
    if let Ok(response) = reference {
        assert_eq!(response.status(), 202);
    }
    // The worker claims the job and the process aborts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = crashing.child.try_wait().unwrap() {
            assert!(!status.success());
            break;
        }
        assert!(Instant::now() < deadline, "the failpoint did not fire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE status = 'running'").await,
        1
    );

    let healthy = ServeProcess::start(&db, &[("SEGWATCH_LEASE_SECS", "2")]).await;
    let case = wait_scored(&client, &healthy.base, &key, "s", "c").await;
    assert_eq!(case["status"], "scored");
    assert_eq!(count(&db, "SELECT count(*) FROM results").await, 1);
    assert_eq!(
        count(&db, "SELECT CAST(attempts AS BIGINT) FROM jobs").await,
        2
    );
    drop(healthy);
    db.drop_db().await;
}

/// A 16×16×8 volume with only a cube of label 1.
fn one_cube() -> Vec<u8> {
    let grid = Grid::axis_aligned([16, 16, 8], [1.0, 1.0, 2.0], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y, z) = (i % 16, (i / 16) % 16, i / 256);
            ((2..6).contains(&x) && (2..6).contains(&y) && (1..6).contains(&z)) as u8
        })
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_keep_their_reason_and_purged_uploads_fail_clearly() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let schema = json!({"structures": [{"label": 1, "name": "liver"}]});
    assert_eq!(app.put_schema("m", "strict", &schema).await, 201);
    // The reference comes first with label 2, which the prediction's schema
    // rejects: the prediction is refused at once, naming it, rather than
    // accepted and failed when scored.
    assert_eq!(
        app.upload(&key, "s", "unknown", "reference", cubes(0, 4))
            .await
            .status(),
        202
    );
    let response = app
        .client
        .put(app.url("/v1/sites/s/cases/unknown/prediction?model=m&model_version=strict"))
        .bearer_auth(&key)
        .body(one_cube())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("label 2 (in the case's reference)"),
        "{problem}"
    );
    let (_, case) = app.get(&key, "/v1/sites/s/cases/unknown").await;
    assert_eq!(case["status"], "waiting_for_prediction", "{case}");
    assert_eq!(count(&app.db, "SELECT count(*) FROM jobs").await, 0);

    // After the retention period the voxels go; results stay; rescoring says why it cannot.
    assert_eq!(
        app.upload(&key, "s", "kept", "prediction", cubes(1, 4))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.upload(&key, "s", "kept", "reference", cubes(0, 4))
            .await
            .status(),
        202
    );
    app.wait_scored("s", "kept").await;
    // In batches: one segmentation, then the other, then none left.
    for expected in [1, 1, 0] {
        assert_eq!(app.store.purge_scored(0, 1).await.unwrap(), expected);
    }
    let (_, kept) = app.get(&key, "/v1/sites/s/cases/kept").await;
    assert!(
        kept["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["purged"] == true)
    );
    assert_eq!(kept["structures"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.upload(&key, "s", "kept", "reference", cubes(2, 4))
            .await
            .status(),
        202
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, case) = app.get(&key, "/v1/sites/s/cases/kept").await;
        if case["status"] == "failed" {
            assert!(
                case["reason"].as_str().unwrap().contains("purged"),
                "{case}"
            );
            assert_eq!(
                count(
                    &app.db,
                    "SELECT CAST(attempts AS BIGINT) FROM jobs WHERE status = 'failed'"
                )
                .await,
                1,
                "a permanent failure is not retried"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{case}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_an_id_and_json_is_compressed() {
    let app = TestApp::start().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("x-request-id", "pacs-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "pacs-42");
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    app.finish().await;
}

/// A `segwatch serve` on `database_url`, not waited for: it must open its port
/// whatever the state of the database.
fn serve_on(database_url: &str) -> ServeProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .arg("serve")
        .env("SEGWATCH_DATABASE_URL", database_url)
        .env("SEGWATCH_LISTEN", format!("127.0.0.1:{port}"))
        .env("SEGWATCH_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ServeProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Polls `path` until it answers `status`, for at most `within`; returns the body.
async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    status: u16,
    within: Duration,
) -> (String, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().as_u16() == status
        {
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            return (content_type, response.text().await.unwrap());
        }
        assert!(Instant::now() < deadline, "{url} did not answer {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `segwatch migrate` and `keys list` against `url` fail with one line naming
/// the host, port, database and setting, without the password or a Postgres
/// source position.
fn assert_cli_names_the_database(url: &str, host: &str, port: u16, database: &str) {
    for args in [&["migrate"][..], &["keys", "list"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_segwatch"))
            .args(args)
            .env("SEGWATCH_DATABASE_URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        for part in [
            host,
            &format!(":{port}"),
            &format!("\"{database}\""),
            "database_url",
            "SEGWATCH_DATABASE_URL",
        ] {
            assert!(
                stderr.contains(part),
                "{args:?}: {part} missing in {stderr}"
            );
        }
        assert!(!stderr.contains("s3cret"), "{stderr}");
        assert!(!stderr.contains("at line"), "{stderr}");
    }
}

/// Waits until `base` answers /healthz 200 and /readyz 503 problem+json without
/// the password or Postgres source positions; returns the /readyz body.
async fn up_but_not_ready(client: &reqwest::Client, base: &str) -> String {
    wait_for_status(
        client,
        &format!("{base}/healthz"),
        200,
        Duration::from_secs(5),
    )
    .await;
    let (content_type, body) = wait_for_status(
        client,
        &format!("{base}/readyz"),
        503,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(content_type, "application/problem+json");
    assert!(
        !body.contains("s3cret") && !body.contains("at line"),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_opens_its_port_without_the_database_and_migrates_when_it_appears() {
    if !crate::common::on_postgres() {
        crate::common::not_on_postgres(
            "serve_opens_its_port_without_the_database_and_migrates_when_it_appears",
        );
        return;
    }
    let client = reqwest::Client::new();
    let mut admin = reqwest::Url::parse(&crate::common::admin_url()).unwrap();
    let host = admin.host_str().unwrap().to_owned();
    let port = admin.port().unwrap_or(5432);

    // Nothing listens on the port.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgres://segwatch:s3cret@127.0.0.1:{closed_port}/segwatch_nowhere");
    assert_cli_names_the_database(&closed, "127.0.0.1", closed_port, "segwatch_nowhere");
    let serve = serve_on(&closed);
    let started = Instant::now();
    up_but_not_ready(&client, &serve.base).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(serve);

    // The server answers but the database does not exist yet.
    let name = format!("segwatch_test_{:016x}", rand::random::<u64>());
    admin.set_password(Some("s3cret")).unwrap();
    admin.set_path(&name);
    let missing = admin.to_string();
    assert_cli_names_the_database(&missing, &host, port, &name);
    let serve = serve_on(&missing);
    let body = up_but_not_ready(&client, &serve.base).await;
    assert!(body.contains("does not exist"), "{body}");

    // Created: ready without a restart, migrations applied.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&crate::common::admin_url())
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .unwrap();
    let db = TestDb::Postgres {
        url: missing.clone(),
        name,
    };
    wait_for_status(
        &client,
        &format!("{}/readyz", serve.base),
        200,
        Duration::from_secs(20),
    )
    .await;
    assert!(count(&db, "SELECT count(*) FROM api_keys").await >= 0);
    drop(serve);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_without_migrations_says_so_without_postgres_positions() {
    let bare = TestDb::new().await;
    let base = serve_without_migrating(&bare).await;
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("segwatch migrate"), "{detail}");
    assert!(!detail.contains("at line"), "{detail}");
    bare.drop_db().await;
}

/// The `src` of every `<script>` and the `href` of every `<link>` in `html`.
fn asset_urls(html: &str) -> Vec<(String, String)> {
    let mut urls = Vec::new();
    for (tag, attribute) in [("<script", "src="), ("<link", "href=")] {
        for (at, _) in html.match_indices(tag) {
            let end = html[at..].find('>').map_or(html.len(), |e| at + e);
            let element = &html[at..end];
            if let Some(a) = element.find(attribute) {
                let value = &element[a + attribute.len()..];
                let quote = value.chars().next().unwrap();
                let value = value[1..].split(quote).next().unwrap();
                urls.push((tag[1..].to_owned(), value.to_owned()));
            }
        }
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_load_only_assets_served_by_segwatch() {
    let app = TestApp::start().await;
    let page = reqwest::Url::parse(&app.url("/docs")).unwrap();
    let response = app.client.get(page.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("\"openapi\""));
    let urls = asset_urls(&html);
    assert!(
        urls.iter().any(|(tag, _)| tag == "script"),
        "no script: {html}"
    );
    for (tag, url) in urls {
        let resolved = page.join(&url).unwrap();
        assert_eq!(
            resolved.origin(),
            page.origin(),
            "{tag} {url} is not served by segwatch"
        );
        let asset = app.client.get(resolved).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{url}");
        let content_type = asset.headers()["content-type"].to_str().unwrap().to_owned();
        let expected = if tag == "script" {
            "javascript"
        } else {
            "text/css"
        };
        assert!(content_type.contains(expected), "{url}: {content_type}");
        assert!(!asset.bytes().await.unwrap().is_empty(), "{url}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_compressed_upload_accepted_at_ingest_is_scored() {
    // Bodies up to 1 MiB, voxel data up to 64 MiB: a gzip label map of 4 MB
    // inflated arrives in a few kB and must be read back by the worker.
    let app = TestApp::start_with(|c| {
        c.limits.max_upload_bytes = 1 << 20;
        c.limits.max_decompressed_bytes = 64 << 20;
    })
    .await;
    let shape = [200, 200, 100];
    let grid = Grid::axis_aligned(shape, [1.0, 1.0, 2.0], 3);
    let labels: Vec<u8> = (0..grid.len())
        .map(|i| u8::from((i % 200) > 50 && (i % 200) < 150))
        .collect();
    let body = encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true);
    assert!(body.len() < 1 << 20, "{} bytes", body.len());
    for role in ["prediction", "reference"] {
        let response = app
            .upload(&app.admin_key, "site1", "big", role, body.clone())
            .await;
        assert_eq!(response.status(), 202);
    }
    let case = app.wait_scored("site1", "big").await;
    assert_eq!(case["status"], "scored", "{case}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_keep_answering_while_the_database_is_gone() {
    let Some(db) = TestDb::postgres_only("metrics_keep_answering_while_the_database_is_gone").await
    else {
        return;
    };
    let serve = ServeProcess::start(&db, &[("SEGWATCH_REFRESH_SECS", "1")]).await;
    let store = db.store();
    let reader = store.create_key(Role::Read, None, None).await.unwrap();
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client
            .get(format!("{}/metrics", serve.base))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let until = |text: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if scrape().await.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "/metrics never showed {text}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    until("segwatch_database_up 1").await;
    // The database goes away: the key read before still works, the gauges say so.
    drop(store);
    db.drop_db().await;
    until("segwatch_database_up 0").await;
    let ready = client
        .get(format!("{}/readyz", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

/// Asserts the server closes `connection` within 5 s (the timeout is 1 s).
async fn assert_closed_within_seconds(connection: &mut tokio::net::TcpStream, what: &str) {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut rest = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "{what} was still open after 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what}: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new().await;
    let serve = ServeProcess::start(&db, &[("SEGWATCH_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let address = serve.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: segwatch\r\n")
        .await
        .unwrap();
    // The server closes the connection (hyper may first answer 408).
    assert_closed_within_seconds(&mut slow, "the half-sent request").await;
    // A keep-alive connection left idle after a complete exchange is closed
    // within the same timeout.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: segwatch\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert_closed_within_seconds(&mut idle, "the idle connection").await;
    // Meanwhile and afterwards, complete requests are served.
    let health = reqwest::get(format!("{}/healthz", serve.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(serve);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_more_structures_than_allowed_is_refused() {
    let app = TestApp::start_with(|c| c.limits.max_structures = 2).await;
    // Two labels: accepted.
    assert_eq!(
        app.upload(&app.admin_key, "site1", "two", "prediction", cubes(0, 4))
            .await
            .status(),
        202
    );
    // Three labels: each would be a set of metric series.
    let grid = Grid::axis_aligned([8, 8, 4], [1.0; 3], 3);
    let labels: Vec<u8> = (0..grid.len()).map(|i| (i % 4) as u8).collect();
    let three = encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true);
    let response = app
        .upload(&app.admin_key, "site1", "three", "prediction", three)
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("too-many-structures"),
        "{problem}"
    );
    let (status, _) = app.get(&app.admin_key, "/v1/sites/site1/cases/three").await;
    assert_eq!(status, 404);
    app.finish().await;
}

/// The `type` of a problem+json response, after its last `/`.
async fn problem_kind(response: reqwest::Response) -> String {
    let problem: Value = response.json().await.unwrap();
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_versions_past_their_bounds_are_refused() {
    let app = TestApp::start_with(|c| {
        c.limits.max_models = 2;
        c.limits.max_model_versions = 2;
    })
    .await;
    let predict = |case: &'static str, model: &'static str, version: &'static str| {
        app.client
            .put(app.url(&format!(
                "/v1/sites/site1/cases/{case}/prediction?model={model}&model_version={version}"
            )))
            .bearer_auth(&app.admin_key)
            .body(cubes(0, 4))
            .send()
    };
    assert_eq!(predict("a1", "liver", "1").await.unwrap().status(), 202);
    assert_eq!(predict("a2", "liver", "2").await.unwrap().status(), 202);
    // An active version takes more predictions; a third version does not.
    assert_eq!(predict("a3", "liver", "2").await.unwrap().status(), 202);
    let third = predict("a4", "liver", "3").await.unwrap();
    assert_eq!(third.status(), 422);
    assert_eq!(problem_kind(third).await, "too-many-model-versions");
    assert_eq!(predict("b1", "lung", "1").await.unwrap().status(), 202);
    let third_model = predict("c1", "kidney", "1").await.unwrap();
    assert_eq!(third_model.status(), 422);
    assert_eq!(problem_kind(third_model).await, "too-many-models");
    for case in ["a4", "c1"] {
        let (status, _) = app
            .get(&app.admin_key, &format!("/v1/sites/site1/cases/{case}"))
            .await;
        assert_eq!(status, 404, "nothing stored for {case}");
    }
    // A version stops counting once its predictions are older than the window.
    app.db
        .execute(
            "UPDATE segmentations SET received_at = '2000-01-01T00:00:00.000000Z' WHERE model = 'liver' AND model_version = '1'",
        )
        .await;
    assert_eq!(predict("a5", "liver", "3").await.unwrap().status(), 202);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_past_the_memory_ceiling_get_503_with_retry_after() {
    // The ceiling equals the upload limit: one 1 MiB body fits, two do not.
    let app = TestApp::start_with(|c| {
        c.limits.max_upload_bytes = 1 << 20;
        c.limits.max_body_memory_bytes = 1 << 20;
    })
    .await;
    // A Content-Encoding body inflating past the per-upload limit is 413.
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 8 << 20]).unwrap();
        gz.finish().unwrap()
    };
    let response = app
        .client
        .put(app.url("/v1/sites/site1/cases/bomb/reference"))
        .bearer_auth(&app.admin_key)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // A streamed body that passes what is free is 503 with Retry-After: one
    // chunked request holds 700 KiB while another sends 700 KiB.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/sites/site1/cases/slow/reference HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        app.admin_key,
        700 << 10
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&vec![0u8; 700 << 10]).await.unwrap();
    slow.write_all(b"\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = app
        .client
        .put(app.url("/v1/sites/site1/cases/second/reference"))
        .bearer_auth(&app.admin_key)
        .body(vec![7u8; 700 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "5");
    assert_eq!(problem_kind(second).await, "unavailable");
    // The first body ends (not an image: 422); then the room is free again.
    slow.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    let again = app
        .upload(&app.admin_key, "site1", "second", "reference", cubes(0, 4))
        .await;
    assert_eq!(again.status(), 202);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_time_limit_gets_problem_json_with_retry_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start_with(|c| c.limits.request_timeout_secs = 1).await;
    // Headers, then a body that stalls.
    let mut slow = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/sites/site1/cases/slow/reference HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nabc",
        app.admin_key
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut answer))
        .await
        .expect("answered within 10 s")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(lower.contains("retry-after: 5"), "{answer}");
    assert!(answer.contains("request_timeout_secs"), "{answer}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_version_gathers_at_most_max_structures() {
    let app = TestApp::start_with(|c| c.limits.max_structures = 2).await;
    let labelled = |label: u8| {
        let grid = Grid::axis_aligned([8, 8, 4], [1.0; 3], 3);
        let labels: Vec<u8> = (0..grid.len())
            .map(|i| if i % 5 == 0 { label } else { 0 })
            .collect();
        encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
    };
    // Labels 1 and 2 are gathered by the first scored pair.
    for role in ["prediction", "reference"] {
        let r = app
            .upload(&app.admin_key, "site1", "first", role, cubes(0, 4))
            .await;
        assert_eq!(r.status(), 202);
    }
    assert_eq!(app.wait_scored("site1", "first").await["status"], "scored");
    // Label 3 would be a third structure of m v1: the upload completing the
    // pair is refused and stores nothing, whichever side comes second.
    let r = app
        .upload(&app.admin_key, "site1", "rotated", "reference", labelled(3))
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .upload(
            &app.admin_key,
            "site1",
            "rotated",
            "prediction",
            labelled(3),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(problem_kind(r).await, "too-many-structures");
    let (_, case) = app
        .get(&app.admin_key, "/v1/sites/site1/cases/rotated")
        .await;
    assert_eq!(case["revisions"].as_array().unwrap().len(), 1, "{case}");
    // Known structures still pair.
    let r = app
        .upload(&app.admin_key, "site1", "again", "reference", labelled(2))
        .await;
    assert_eq!(r.status(), 202);
    let r = app
        .upload(&app.admin_key, "site1", "again", "prediction", labelled(1))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.wait_scored("site1", "again").await["status"], "scored");
    app.finish().await;
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    use std::process::Stdio;
    let mut serve = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .arg("serve")
        .env("SEGWATCH_LISTEN", "127.0.0.1:0")
        .env(
            "SEGWATCH_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    serve.kill().unwrap();
    let output = serve.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("segwatch serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gauges_are_current_when_scraped() {
    // No workers, and gauges refreshed only every 15 s: a scrape right after the
    // upload must already count the queued job.
    let app = TestApp::start_with(|c| {
        c.workers.disabled = true;
        c.drift.refresh_secs = 15;
    })
    .await;
    assert!(app.metrics().await.contains("\nsegwatch_jobs_queued 0\n"));
    for role in ["prediction", "reference"] {
        let response = app
            .upload(&app.admin_key, "s", "c", role, cubes(0, 4))
            .await;
        assert_eq!(response.status(), 202);
    }
    let text = app.metrics().await;
    assert!(text.contains("\nsegwatch_jobs_queued 1\n"), "{text}");
    assert!(text.contains("\nsegwatch_jobs_running 0\n"), "{text}");
    // The refresh and the purge, in tasks of their own, ran once at the start
    // and are timed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.metrics().await;
        let value = |name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .find_map(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let refreshed = value("segwatch_refresh_duration_seconds_count") >= 1.0;
        let purged = value("segwatch_purge_duration_seconds") > 0.0;
        if refreshed && purged {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_data_directory_is_named_and_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data directory should be.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let data_dir = file.join("data");
    for args in [&["keys", "list"][..], &["migrate"][..], &["serve"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_segwatch"))
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("SEGWATCH_DATABASE_URL")
            .env("SEGWATCH_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot use the data directory")
                && stderr.contains(&data_dir.display().to_string())
                && stderr.contains("--data-dir"),
            "{args:?}: {stderr}"
        );
    }
}
