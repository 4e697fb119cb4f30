//! `GET /v1/models/{model}/compare`: two versions of a model, structure by structure.

use segwatch::store::Role;
use serde_json::Value;

use crate::common::{TestApp, read_fixture, scored_with};

#[tokio::test]
async fn a_version_that_improves_the_same_cases_is_called_better_where_it_improves() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let reader = app.key(Role::Read, None).await;
    let prediction = read_fixture("reference/cases/P09_pred.nii.gz");
    let reference = read_fixture("reference/cases/P09_ref.nii.gz");
    let cases = ["c1", "c2", "c3", "c4", "c5"];
    for case in cases {
        for (role, body) in [("prediction", &prediction), ("reference", &reference)] {
            let response = app.upload(&key, "s", case, role, body.clone()).await;
            assert_eq!(response.status(), 202);
        }
    }
    let mut v1 = Value::Null;
    for case in cases {
        v1 = scored_with(&app, &key, case, "v1").await;
    }
    // Version 2 predicts the reference itself: each case scored again.
    for case in cases {
        let response = app.predict(&key, "s", case, "v2", reference.clone()).await;
        assert_eq!(response.status(), 202);
    }
    for case in cases {
        scored_with(&app, &key, case, "v2").await;
    }
    let (status, report) = app.get(&reader, "/v1/models/m/compare?a=v1&b=v2").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["cases_a"].as_u64(), report["cases_b"].as_u64()),
        (Some(5), Some(5))
    );
    let compared = report["structures"].as_array().unwrap();
    let structures = v1["structures"].as_array().unwrap();
    // A structure only v1 predicted (empty reference) is empty on both sides
    // under v2: scored by A only.
    let only_a: Vec<&Value> = structures.iter().filter(|s| s["empty"] == "ref").collect();
    let not_compared = report["not_compared"].as_array().unwrap();
    assert_eq!(not_compared.len(), only_a.len(), "{report}");
    for s in only_a {
        let entry = not_compared
            .iter()
            .find(|n| n["structure"] == s["name"])
            .unwrap();
        assert_eq!(entry["reason"], "only version A scored it");
    }
    let scored: Vec<&Value> = structures
        .iter()
        .filter(|s| s["empty"] != "both" && s["empty"] != "ref")
        .collect();
    assert_eq!(compared.len(), scored.len(), "{report}");
    let mut improved = 0;
    for s in scored {
        let name = s["name"].as_str().unwrap();
        let c = compared.iter().find(|c| c["structure"] == name).unwrap();
        let dice = s["dice"].as_f64().unwrap();
        assert_eq!(c["design"], "paired", "{c}");
        assert_eq!(c["test"], "wilcoxon", "{c}");
        assert_eq!(c["n_paired"], 5, "{c}");
        let difference = c["mean_difference"].as_f64().unwrap();
        assert!((difference - (1.0 - dice)).abs() < 1e-12, "{name}: {c}");
        let expected = if dice < 1.0 {
            "b_better"
        } else {
            "no_evidence"
        };
        assert_eq!(c["verdict"], expected, "{name}: {c}");
        improved += usize::from(dice < 1.0);
    }
    assert!(
        improved >= 2,
        "P09's prediction is imperfect on several structures: {report}"
    );
    // The command line shows the same answer as a table, and with
    // --fail-if-worse exits 1 when B is worse somewhere (v1 against v2).
    // The command runs off the runtime that serves it.
    let cli = |a: &str, b: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_segwatch"));
        command
            .args([
                "compare", "--url", &app.base, "--model", "m", "--a", a, "--b", b,
            ])
            .arg("--fail-if-worse")
            .env("SEGWATCH_KEY", &reader);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let better = cli("v1", "v2").await.unwrap();
    let table = String::from_utf8_lossy(&better.stdout);
    let errors = String::from_utf8_lossy(&better.stderr);
    assert!(better.status.success(), "{table}{errors}");
    assert_eq!(table.matches("B better").count(), improved, "{table}");
    assert!(
        table.contains("not compared: only version A scored it"),
        "{table}"
    );
    let worse = cli("v2", "v1").await.unwrap();
    let table = String::from_utf8_lossy(&worse.stdout);
    assert_eq!(worse.status.code(), Some(1), "{table}");
    assert_eq!(table.matches("B worse").count(), improved, "{table}");
    // An ingest key compares its own site only; an unknown version is 404.
    assert_eq!(app.get(&key, "/v1/models/m/compare?a=v1&b=v2").await.0, 403);
    assert_eq!(
        app.get(&key, "/v1/models/m/compare?a=v1&b=v2&site=s")
            .await
            .0,
        200
    );
    assert_eq!(
        app.get(&key, "/v1/models/m/compare?a=v1&b=v2&site=t")
            .await
            .0,
        403
    );
    assert_eq!(
        app.get(&reader, "/v1/models/m/compare?a=v1&b=v9").await.0,
        404
    );
    app.finish().await;
}
