//! `POST /v1/models/{model}/versions/{version}/gate`, its audit trail
//! (`GET …/gates`) and `segwatch gate`: a version below its schema's limit on
//! one structure fails on that structure only, for the reason it breaks.

use segwatch::formats::nifti::encode;
use segwatch::store::Role;
use segwatch::volume::{Grid, LabelVolume, Labels};
use serde_json::{Value, json};

use crate::common::{TestApp, scored_with};

/// A 12³ label map: liver (1) fills x < 6; spleen (2) fills x ≥ 6, y < `spleen_rows`.
fn label_map(spleen_rows: usize) -> Vec<u8> {
    let grid = Grid::axis_aligned([12, 12, 12], [1.0, 1.0, 1.0], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y) = (i % 12, (i / 12) % 12);
            match (x < 6, y < spleen_rows) {
                (true, _) => 1,
                (false, true) => 2,
                (false, false) => 0,
            }
        })
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

/// The reference's spleen has 6 rows; half of them predicted: Dice 2·3/(6+3).
const HALF_SPLEEN_DICE: f64 = 2.0 / 3.0;

async fn predict(app: &TestApp, key: &str, case: &str, version: &str, body: Vec<u8>) {
    let response = app.predict(key, "s", case, version, body).await;
    assert_eq!(response.status(), 202);
}

/// The id part of a `sw_<id>_<secret>` key.
fn key_id(key: &str) -> &str {
    key.split('_').nth(1).unwrap()
}

#[tokio::test]
async fn a_version_below_its_limit_on_one_structure_fails_on_that_structure_only() {
    let app = TestApp::start().await;
    let ingest = app.key(Role::Ingest, Some("s")).await;
    let reader = app.key(Role::Read, None).await;
    // Spleen must reach a lower bound of 0.8 although a case fails below 0.5.
    let schema = json!({"structures": [
        {"label": 1, "name": "liver", "failure_threshold": 0.5},
        {"label": 2, "name": "spleen", "failure_threshold": 0.5, "gate_min_mean_dice": 0.8}
    ]});
    for version in ["v1", "v2"] {
        assert_eq!(app.put_schema("m", version, &schema).await, 201);
    }
    let cases = ["c1", "c2", "c3", "c4", "c5"];
    // v1 predicts the reference; v2 then predicts half the spleen.
    for case in cases {
        let response = app
            .upload(&ingest, "s", case, "reference", label_map(6))
            .await;
        assert_eq!(response.status(), 202);
        predict(&app, &ingest, case, "v1", label_map(6)).await;
    }
    for case in cases {
        scored_with(&app, &ingest, case, "v1").await;
    }
    assert_eq!(
        app.post(&reader, "/v1/models/m/versions/v2/gate").await.0,
        404,
        "nothing scored with v2 yet"
    );
    for case in cases {
        predict(&app, &ingest, case, "v2", label_map(3)).await;
    }
    for case in cases {
        scored_with(&app, &ingest, case, "v2").await;
    }

    let (status, good) = app.post(&reader, "/v1/models/m/versions/v1/gate").await;
    assert_eq!(status, 201, "{good}");
    assert_eq!(good["passed"], true, "{good}");
    assert_eq!(good["report"]["cases"], 5);
    for s in good["report"]["structures"].as_array().unwrap() {
        assert_eq!(
            (s["n"].as_u64(), s["passed"].as_bool()),
            (Some(5), Some(true))
        );
        assert_eq!(s["lower_bound"], 1.0, "{s}");
        assert_eq!(s["failures"], json!([]));
    }

    let (status, bad) = app.post(&reader, "/v1/models/m/versions/v2/gate").await;
    assert_eq!(status, 201, "{bad}");
    assert_eq!(bad["passed"], false, "{bad}");
    let structures = bad["report"]["structures"].as_array().unwrap();
    let names: Vec<&str> = structures
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["liver", "spleen"]);
    assert_eq!(structures[0]["passed"], true, "{bad}");
    assert_eq!(structures[0]["failures"], json!([]));
    let spleen = &structures[1];
    assert_eq!(spleen["passed"], false);
    assert_eq!(spleen["failure_rate"], 0.0, "every case is above 0.5");
    assert_eq!(
        spleen["rule"],
        json!({"min_mean_dice": 0.8, "failure_threshold": 0.5, "max_failure_rate": 0.1})
    );
    let failures = spleen["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{spleen}");
    assert_eq!(failures[0]["reason"], "low_mean_dice");
    assert_eq!(
        (failures[0]["level"].as_f64(), failures[0]["min"].as_f64()),
        (Some(0.95), Some(0.8))
    );
    let bound = failures[0]["lower_bound"].as_f64().unwrap();
    assert!((bound - HALF_SPLEEN_DICE).abs() < 1e-12, "{spleen}");
    assert_eq!(
        spleen["reasons"],
        json!(["lower 95% bound of mean Dice 0.6667 is below 0.8"])
    );

    // One site's results with its ingest key; the audit trail, newest first.
    let (status, at_site) = app
        .post(&ingest, "/v1/models/m/versions/v2/gate?site=s")
        .await;
    assert_eq!(
        (status, &at_site["passed"]),
        (201, &json!(false)),
        "{at_site}"
    );
    let (status, trail) = app.get(&reader, "/v1/models/m/versions/v2/gates").await;
    assert_eq!(status, 200, "{trail}");
    let trail = trail.as_array().unwrap();
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[0], at_site);
    assert_eq!(trail[1], bad);
    assert_eq!(trail[0]["site"], "s");
    assert_eq!(trail[0]["key_id"], key_id(&ingest));
    assert_eq!(trail[1]["site"], Value::Null);
    assert_eq!(trail[1]["key_id"], key_id(&reader));
    assert!(trail[0]["id"].as_i64() > trail[1]["id"].as_i64());
    let (_, site_trail) = app
        .get(&ingest, "/v1/models/m/versions/v2/gates?site=s")
        .await;
    assert_eq!(site_trail, json!([at_site]));
    let (_, latest) = app
        .get(&reader, "/v1/models/m/versions/v2/gates?limit=1")
        .await;
    assert_eq!(latest, json!([at_site]));
    let (_, v1_trail) = app.get(&reader, "/v1/models/m/versions/v1/gates").await;
    assert_eq!(v1_trail, json!([good]));

    // A time window: only results scored since then.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let since = |t: &str| {
        format!(
            "/v1/models/m/versions/v1/gate?since={}",
            t.replace('+', "%2B")
        )
    };
    assert_eq!(app.post(&reader, &since(&later)).await.0, 404);
    let (status, window) = app.post(&reader, &since("2020-01-01T00:00:00Z")).await;
    assert_eq!((status, &window["passed"]), (201, &json!(true)), "{window}");
    assert_eq!(window["since"], "2020-01-01T00:00:00Z");

    // Bad requests, each with a problem.
    let (status, problem) = app.post(&reader, &since("yesterday")).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        app.post(&ingest, "/v1/models/m/versions/v2/gate").await.0,
        403
    );
    assert_eq!(
        app.post(&ingest, "/v1/models/m/versions/v2/gate?site=t")
            .await
            .0,
        403
    );
    assert_eq!(
        app.get(&ingest, "/v1/models/m/versions/v2/gates").await.0,
        403
    );
    assert_eq!(
        app.post(&reader, "/v1/models/m/versions/v9/gate").await.0,
        404
    );
    let (status, problem) = app.post(&reader, "/v1/models/m/versions/v%20x/gate").await;
    assert_eq!(
        (status, problem["type"].as_str().is_some()),
        (400, true),
        "{problem}"
    );
    let (status, _) = app
        .get(&reader, "/v1/models/m/versions/v2/gates?limit=0")
        .await;
    assert_eq!(status, 400);
    // Scored, but without a schema to take the limits from.
    predict(&app, &ingest, "c1", "v3", label_map(5)).await;
    scored_with(&app, &ingest, "c1", "v3").await;
    let (status, problem) = app.post(&reader, "/v1/models/m/versions/v3/gate").await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["type"].as_str().unwrap().ends_with("no-schema"),
        "{problem}"
    );
    assert_eq!(
        app.get(&reader, "/v1/models/m/versions/v3/gates").await.1,
        json!([])
    );

    // The command line: 0 when it passes, 1 when it fails, 2 on an error.
    let cli = |version: &str, json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_segwatch"));
        command
            .args([
                "gate",
                "--url",
                &app.base,
                "--model",
                "m",
                "--version",
                version,
            ])
            .env("SEGWATCH_KEY", &reader);
        if json {
            command.arg("--json");
        }
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let passes = cli("v1", false).await.unwrap();
    let table = String::from_utf8_lossy(&passes.stdout);
    assert_eq!(passes.status.code(), Some(0), "{table}");
    assert!(table.starts_with("m v1: passes"), "{table}");
    let fails = cli("v2", false).await.unwrap();
    let table = String::from_utf8_lossy(&fails.stdout);
    assert_eq!(fails.status.code(), Some(1), "{table}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[2].starts_with("liver") && rows[2].ends_with("pass"),
        "{table}"
    );
    assert!(
        rows[3].starts_with("spleen") && rows[3].ends_with("FAIL"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains(" fails: "))
            .collect::<Vec<_>>(),
        ["spleen fails: lower 95% bound of mean Dice 0.6667 is below 0.8"]
    );
    let as_json = cli("v2", true).await.unwrap();
    assert_eq!(as_json.status.code(), Some(1));
    let decision: Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(decision["report"], bad["report"]);
    let error = cli("v9", false).await.unwrap();
    let message = String::from_utf8_lossy(&error.stderr);
    assert_eq!(error.status.code(), Some(2), "{message}");
    assert!(message.contains("gating m v9: 404"), "{message}");
    // Every decision asked through the command line is on record too.
    let (_, trail) = app.get(&reader, "/v1/models/m/versions/v2/gates").await;
    assert_eq!(trail.as_array().unwrap().len(), 4);
    app.finish().await;
}
