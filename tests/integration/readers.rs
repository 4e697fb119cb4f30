//! Several readers: each reference upload names its reader by a pseudonym.

use std::time::{Duration, Instant};

use segwatch::store::Role;
use serde_json::{Value, json};

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

/// A label map on a 4 × 5 × 2 grid of 1 mm voxels: each run of voxel
/// indices (x fastest) gets its label, the rest is background.
fn label_map(runs: &[(u8, std::ops::Range<usize>)]) -> Vec<u8> {
    use segwatch::formats::nifti::encode;
    use segwatch::volume::{Grid, LabelVolume, Labels};
    let grid = Grid::axis_aligned([4, 5, 2], [1.0; 3], 3);
    let mut labels = vec![0u8; grid.len()];
    for (label, run) in runs {
        labels[run.clone()].fill(*label);
    }
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

/// Reader 1: liver (label 1) on voxels 0..10, spleen (2) on 20..30.
fn first_reader() -> Vec<u8> {
    label_map(&[(1, 0..10), (2, 20..30)])
}

/// Reader 2: liver on 2..12, spleen on 20..26.
fn second_reader() -> Vec<u8> {
    label_map(&[(1, 2..12), (2, 20..26)])
}

/// Liver as in every schema; spleen ambiguous below an inter-reader Dice of 0.8.
async fn two_structures(app: &TestApp) {
    let schema = json!({"structures": [
        {"label": 1, "name": "liver"},
        {"label": 2, "name": "spleen", "ambiguous_below": 0.8}
    ]});
    assert_eq!(app.put_schema("m", "v1", &schema).await, 201);
}

/// Polls case `case` of site s until `done` holds; the case.
async fn case_until(app: &TestApp, key: &str, case: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = app.get(key, &format!("/v1/sites/s/cases/{case}")).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{case}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The version's agreement on `structure` in a case view.
fn agreement<'a>(case: &'a Value, structure: &str) -> &'a Value {
    case["versions"][0]["readers"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["structure"] == structure))
        .unwrap_or_else(|| panic!("no agreement on {structure}: {case}"))
}

fn close(value: &Value, expected: f64) {
    let v = value.as_f64().unwrap_or(f64::NAN);
    assert!((v - expected).abs() < 1e-9, "{v} != {expected}");
}

/// The AI's Dice against each reader, by reader.
fn ai_vs_reader(a: &Value) -> Vec<(String, f64)> {
    a["ai_vs_reader"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reader"].as_str().unwrap().to_owned(),
                r["dice"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A job reads other readers' references only when they are compared, and
/// never its own reference a second time.
#[tokio::test]
async fn reader_references_are_read_only_for_agreement() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    assert_eq!(
        reference(&app, &key, "c1", Some("r1"), &first_reader())
            .await
            .0,
        202
    );
    let case: i64 = app.db.scalar("SELECT id FROM cases").await;
    let first: i64 = app
        .db
        .scalar("SELECT id FROM segmentations WHERE reader = 'r1'")
        .await;
    // One reader: nothing to compare, so no content is read, held or not.
    for held in [first, 0] {
        let one = app.store.reader_references(case, held).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].id, one[0].content.is_none()), (first, true));
    }
    assert_eq!(
        reference(&app, &key, "c1", Some("r2"), &second_reader())
            .await
            .0,
        202
    );
    let second: i64 = app
        .db
        .scalar("SELECT id FROM segmentations WHERE reader = 'r2'")
        .await;
    // Two readers: the other reader's reference is read, the held one not.
    let two = app.store.reader_references(case, first).await.unwrap();
    let read: Vec<(&str, i64, bool)> = two
        .iter()
        .map(|r| (r.reader.as_str(), r.id, r.content.is_some()))
        .collect();
    assert_eq!(read, [("r1", first, false), ("r2", second, true)]);
    let two = app.store.reader_references(case, second).await.unwrap();
    assert_eq!(
        (two[0].content.is_some(), two[1].content.is_some()),
        (true, false)
    );
}

#[tokio::test]
async fn a_second_reader_adds_agreement_and_the_first_stays_the_reference_of_results() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let read = app.key(Role::Read, None).await;
    two_structures(&app).await;
    assert_eq!(
        reference(&app, &key, "c1", Some("r1"), &first_reader())
            .await
            .0,
        202
    );
    // The AI draws what reader 1 does.
    assert_eq!(
        app.predict(&key, "s", "c1", "v1", first_reader())
            .await
            .status(),
        202
    );
    let one = app.wait_scored("s", "c1").await;
    assert_eq!(one["status"], "scored", "{one}");
    assert_eq!(
        one["versions"][0]["readers"],
        json!([]),
        "one reader: {one}"
    );
    // No report without two readers.
    assert_eq!(
        app.get(&read, "/v1/models/m/readers?version=v1").await.0,
        404
    );

    assert_eq!(
        reference(&app, &key, "c1", Some("r2"), &second_reader())
            .await
            .0,
        202
    );
    let case = case_until(&app, &key, "c1", |c| {
        c["versions"][0]["readers"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    // The result is still the one against reader 1, the primary reader: the
    // second reader's job made no result.
    let results: i64 = app.db.scalar("SELECT count(*) FROM results").await;
    assert_eq!(results, 1);
    close(&case["structures"][0]["dice"], 1.0);
    let readers: Vec<&Value> = case["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["reader"])
        .collect();
    assert_eq!(
        readers,
        [&json!("r1"), &Value::Null, &json!("r2")],
        "{case}"
    );

    // Liver: readers share 8 of 10 + 10 voxels, Dice 16/20 = 0.8; the AI is
    // reader 1 (Dice 1) and 0.8 against reader 2, mean 0.9 ≥ 0.8: within.
    // The consensus of two is their intersection, 2..10: AI Dice 16/18.
    let liver = agreement(&case, "liver");
    close(&liver["inter_reader_dice"], 0.8);
    assert_eq!(
        ai_vs_reader(liver),
        [("r1".to_owned(), 1.0), ("r2".to_owned(), 0.8)]
    );
    close(&liver["ai_vs_consensus"], 16.0 / 18.0);
    assert_eq!(
        (&liver["ambiguous"], &liver["within_variability"]),
        (&json!(false), &json!(true))
    );
    // Spleen: reader 2's 6 voxels inside reader 1's 10, Dice 12/16 = 0.75,
    // below the schema's 0.8: ambiguous. AI 1 and 0.75, consensus = reader 2.
    let spleen = agreement(&case, "spleen");
    close(&spleen["inter_reader_dice"], 0.75);
    close(&spleen["ai_vs_consensus"], 0.75);
    assert_eq!(
        (&spleen["ambiguous"], &spleen["within_variability"]),
        (&json!(true), &json!(true))
    );

    // The version's report: one case per structure, the same numbers.
    let (status, report) = app.get(&read, "/v1/models/m/readers?version=v1").await;
    assert_eq!(status, 200, "{report}");
    let structures = report["structures"].as_array().unwrap();
    assert_eq!(structures.len(), 2, "{report}");
    let (l, s) = (&structures[0], &structures[1]);
    assert_eq!(
        (&l["structure"], &l["cases"], &l["ambiguous_cases"]),
        (&json!("liver"), &json!(1), &json!(0))
    );
    close(&l["mean_inter_reader_dice"], 0.8);
    close(&l["mean_ai_vs_reader_dice"], 0.9);
    close(&l["mean_ai_vs_consensus_dice"], 16.0 / 18.0);
    assert_eq!(l["within_variability"], true);
    assert_eq!(
        (&s["structure"], &s["ambiguous_cases"]),
        (&json!("spleen"), &json!(1))
    );
    close(&s["mean_ai_vs_reader_dice"], 0.875);
    // One site, the same; another, nothing; bad input and keys refused.
    let (_, one_site) = app
        .get(&read, "/v1/models/m/readers?version=v1&site=s")
        .await;
    assert_eq!(
        (&one_site["site"], &one_site["structures"]),
        (&json!("s"), &report["structures"])
    );
    assert_eq!(
        app.get(&read, "/v1/models/m/readers?version=v1&site=t")
            .await
            .0,
        404
    );
    assert_eq!(
        app.get(&read, "/v1/models/m/readers?version=v%201").await.0,
        400
    );
    assert_eq!(app.get(&read, "/v1/models/m/readers").await.0, 400);
    assert_eq!(
        app.get(&key, "/v1/models/m/readers?version=v1").await.0,
        403
    );
    assert_eq!(
        app.get(&key, "/v1/models/m/readers?version=v1&site=s")
            .await
            .0,
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/v1/models/m/readers?version=v1"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // A new prediction pairs with the primary reader's reference and
    // replaces the agreement: the AI now draws what reader 2 does.
    assert_eq!(
        app.predict(&key, "s", "c1", "v1", second_reader())
            .await
            .status(),
        202
    );
    let case = case_until(&app, &key, "c1", |c| {
        c["versions"][0]["revision"] == 2
            && c["status"] == "scored"
            && c["versions"][0]["readers"][0]["ai_vs_reader"][1]["dice"] == 1.0
    })
    .await;
    close(&case["structures"][0]["dice"], 0.8);
    assert_eq!(
        ai_vs_reader(agreement(&case, "liver")),
        [("r1".to_owned(), 0.8), ("r2".to_owned(), 1.0)]
    );
    let rows: i64 = app.db.scalar("SELECT count(*) FROM reader_agreement").await;
    assert_eq!(rows, 2);
    app.finish().await;
}

/// Uploads reader 1's and reader 2's references of `case`, then an AI equal
/// to reader 1; the scored case.
async fn readers_then_ai(app: &TestApp, key: &str, case: &str) -> Value {
    for (reader, body) in [("r1", first_reader()), ("r2", second_reader())] {
        assert_eq!(reference(app, key, case, Some(reader), &body).await.0, 202);
    }
    let response = app.predict(key, "s", case, "v1", first_reader()).await;
    assert_eq!(response.status(), 202);
    app.wait_scored("s", case).await
}

/// A case with both readers and an AI equal to reader 1 (liver not
/// ambiguous, spleen ambiguous), fed to drift streams with ambiguous cases
/// excluded or not; the structures of the streams fed.
async fn streams_fed(exclude_ambiguous: bool) -> Vec<String> {
    let app = TestApp::start_with(|c| {
        c.drift.lateness_secs = 0;
        c.drift.exclude_ambiguous = exclude_ambiguous;
    })
    .await;
    let key = app.key(Role::Ingest, Some("s")).await;
    two_structures(&app).await;
    let cases: Vec<Value> = (0..100)
        .map(|i| json!({"liver": 0.9 + f64::from(i % 10) * 0.005, "spleen": 0.85 + f64::from(i % 7) * 0.01}))
        .collect();
    let response = app
        .client
        .put(app.url("/v1/models/m/versions/v1/baseline"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"source": "validation", "cases": cases}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    // Both readers before the prediction: its one job makes the result and
    // the agreement together, before the drift task sees the result.
    let case = readers_then_ai(&app, &key, "c1").await;
    assert_eq!(agreement(&case, "spleen")["ambiguous"], true, "{case}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while app
        .db
        .scalar::<i64>("SELECT count(*) FROM results WHERE drift_pending")
        .await
        > 0
    {
        assert!(Instant::now() < deadline, "not fed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fed: Vec<(String,)> = app
        .db
        .rows("SELECT DISTINCT structure FROM drift_streams WHERE site = 's' ORDER BY structure")
        .await;
    app.finish().await;
    fed.into_iter().map(|(s,)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_cases_leave_the_drift_streams_only_when_configured() {
    assert_eq!(streams_fed(false).await, ["all", "liver", "spleen"]);
    // The ambiguous spleen leaves its stream, and the case the mean-Dice one.
    assert_eq!(streams_fed(true).await, ["liver"]);
}

#[tokio::test]
async fn the_agreement_of_a_purged_case_goes_with_it() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    two_structures(&app).await;
    readers_then_ai(&app, &key, "old").await;
    let rows: i64 = app.db.scalar("SELECT count(*) FROM reader_agreement").await;
    assert_eq!(rows, 2);
    app.db.age_every_case(100).await;
    assert_eq!(app.store.purge_expired_cases(31, 10).await.unwrap(), 1);
    let rows: i64 = app.db.scalar("SELECT count(*) FROM reader_agreement").await;
    assert_eq!(rows, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_second_reader_disagreeing_on_one_structure_shows_there_only() {
    let app = TestApp::start().await;
    let admin = app.key(Role::Admin, None).await;
    let read = app.key(Role::Read, None).await;
    let run = |args: String| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_segwatch"));
        command
            .args(args.split_whitespace())
            .env("SEGWATCH_KEY", &admin);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    // 1 site × 2 days × 3 cases; reader r2 draws the pancreas at Dice 0.6
    // against the first reader and everything else as the first does.
    let output = run(format!(
        "simulate --sites 1 --days 2 --cases-per-day 3 --seed 5 --second-reader \
         --reader-disagrees pancreas:0.4 --url {}",
        app.base
    ))
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let (status, report) = app
            .get(&read, "/v1/models/simnet/readers?version=1.0")
            .await;
        let complete = report["structures"]
            .as_array()
            .is_some_and(|s| s.len() == 5 && s.iter().all(|s| s["cases"] == 6));
        if status == 200 && complete {
            break report;
        }
        assert!(Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for s in report["structures"].as_array().unwrap() {
        let inter = s["mean_inter_reader_dice"].as_f64().unwrap();
        if s["structure"] == "pancreas" {
            assert!((inter - 0.6).abs() < 0.03, "{s}");
            assert_eq!(s["ambiguous_cases"], 6, "{s}");
        } else {
            assert_eq!((inter, &s["ambiguous_cases"]), (1.0, &json!(0)), "{s}");
        }
    }
    // The command line shows the same, as a table and as JSON.
    let readers = format!("readers --model simnet --version 1.0 --url {}", app.base);
    let output = run(readers.clone()).await.unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    let pancreas = table.lines().find(|l| l.starts_with("pancreas")).unwrap();
    assert!(pancreas.split_whitespace().nth(5) == Some("6"), "{table}");
    let output = run(format!("{readers} --json")).await.unwrap();
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json, report);
    app.finish().await;
}
