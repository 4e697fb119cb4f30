//! Upgrading a database that holds data: the schema of the previous release,
//! filled with scored cases, then every migration; nothing is lost and the
//! rollups, the latest-result flag and the last-upload table are filled from
//! the history, the stored files move to a table of their own, and the detector
//! history moves to its compact layout, and the structure rows lose the
//! columns derived on read (PostgreSQL's gain their result's site) and read
//! back the same; PostgreSQL's stored files move to monthly partitions.

use chrono::{Duration, Utc};
use segwatch::drift::feed::parameters;
use segwatch::drift::{Baseline, Detector, StreamProfile};
use segwatch::metrics::Empty;
use segwatch::store::{CaseFilter, Store, StoredUpdate};

use crate::common::TestDb;

/// The last migration of the release before rollups, per backend.
fn previous_release(db: &TestDb) -> i64 {
    if db.is_postgres() { 8 } else { 2 }
}

/// A time as both stores accept it in SQL text.
fn at(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Bytes given in hex, as each store's SQL writes them.
fn bytes_literal(db: &TestDb, hex: &str) -> String {
    if db.is_postgres() {
        format!("decode('{hex}', 'hex')")
    } else {
        format!("X'{hex}'")
    }
}

#[tokio::test]
async fn an_upgrade_keeps_scored_cases_and_fills_the_rollups_from_them() {
    let db = TestDb::new().await;
    db.migrate_to(previous_release(&db)).await;
    let observed = at(Utc::now() - Duration::hours(2));
    let received_at = Utc::now() - Duration::hours(1);
    let received = at(received_at);
    let bytes = |hex: &str| bytes_literal(&db, hex);
    db.execute(&format!(
        "INSERT INTO cases (id, site, case_key, created_at) VALUES
             (1, 'a', 'c1', '{received}'), (2, 'a', 'c2', '{received}')"
    ))
    .await;
    // c1: a prediction and two reference revisions (scored twice); c2: one pair.
    let segmentations = [
        (1, 1, "prediction", 1, "01"),
        (2, 1, "reference", 1, "02"),
        (3, 1, "reference", 2, "03"),
        (4, 2, "prediction", 1, "04"),
        (5, 2, "reference", 1, "05"),
    ];
    for (id, case, role, revision, sha) in segmentations {
        let (model, version) = if role == "prediction" {
            ("'m'", "'v1'")
        } else {
            ("NULL", "NULL")
        };
        db.execute(&format!(
            "INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content, content_bytes, voxels,
                                        grid, model, model_version, observed_at, received_at)
             VALUES ({id}, {case}, '{role}', {revision}, {sha}, 'nifti', {content}, 1, 8, '{{}}', {model}, {version},
                     '{observed}', '{received}')",
            sha = bytes(sha),
            content = bytes("00"),
        ))
        .await;
    }
    db.execute(&format!(
        "INSERT INTO jobs (id, case_id, prediction_id, reference_id, status, attempts, run_after, created_at, finished_at)
         VALUES (1, 1, 1, 2, 'done', 1, '{received}', '{received}', '{received}'),
                (2, 1, 1, 3, 'done', 1, '{received}', '{received}', '{received}'),
                (3, 2, 4, 5, 'done', 1, '{received}', '{received}', '{received}')"
    ))
    .await;
    // (result, job, case, mean Dice, liver Dice)
    let results = [
        (1, 1, 1, 0.8, 0.7),
        (2, 2, 1, 0.9, 0.85),
        (3, 3, 2, 0.6, 0.5),
    ];
    for (id, job, case, mean, liver) in results {
        db.execute(&format!(
            "INSERT INTO results (id, job_id, case_id, site, model, model_version, surface, grid, mean_dice,
                                  observed_at, scored_at)
             VALUES ({id}, {job}, {case}, 'a', 'm', 'v1', 'boundary_voxel', '{{}}', {mean}, '{observed}', '{received}')"
        ))
        .await;
        // liver: 3 voxels predicted, 4 in the reference, 2 in both, named as
        // the structure; lesion: empty on both sides, named otherwise.
        for (position, structure, name, empty, counts, ratios, dice) in [
            (
                0,
                "liver",
                "'liver'",
                "none",
                "3, 4, 2, 1, 2",
                "0.4, 0.6666666666666666, 0.5",
                liver.to_string(),
            ),
            (
                1,
                "lesion",
                "'Lesion'",
                "both",
                "0, 0, 0, 0, 0",
                "1, 1, 1",
                "NULL".to_owned(),
            ),
        ] {
            db.execute(&format!(
                "INSERT INTO structure_results (result_id, position, structure, name, empty, pred_voxels, ref_voxels, tp,
                                                fp, fn, iou, precision, recall, pred_volume_ml, ref_volume_ml, dice,
                                                tolerance_mm)
                 VALUES ({id}, {position}, '{structure}', {name}, '{empty}', {counts}, {ratios}, 1.0, 1.0, {dice}, 1.0)"
            ))
            .await;
        }
    }

    old_detector_updates(&db, &received).await;

    let store = db.store();
    store.migrate().await.unwrap();
    detector_history_moved(&db, &store).await;

    // Nothing lost.
    let means: Vec<(i64, f64)> = db
        .rows("SELECT id, mean_dice FROM results ORDER BY id")
        .await;
    assert_eq!(means, vec![(1, 0.8), (2, 0.9), (3, 0.6)]);
    let stored: i64 = db.scalar("SELECT count(*) FROM structure_results").await;
    assert_eq!(stored, 6);
    // Names equal to the structure's are dropped, others kept; PostgreSQL's
    // rows hold their result's site.
    let names: Vec<(String, Option<String>)> = db
        .rows("SELECT DISTINCT structure, name FROM structure_results ORDER BY structure")
        .await;
    assert_eq!(
        names,
        vec![
            ("lesion".to_owned(), Some("Lesion".to_owned())),
            ("liver".to_owned(), None)
        ]
    );
    if db.is_postgres() {
        let sites: Vec<(String, i64)> = db
            .rows("SELECT site, count(*) FROM structure_results GROUP BY site")
            .await;
        assert_eq!(sites, vec![("a".to_owned(), 6)]);
    }
    // The stored files moved to their own table, to be purged by deleting rows.
    let files: Vec<(i64,)> = db
        .rows("SELECT segmentation_id FROM segmentation_contents ORDER BY segmentation_id")
        .await;
    assert_eq!(files, vec![(1,), (2,), (3,), (4,), (5,)]);
    // PostgreSQL's are in the partition of the month they were received.
    if db.is_postgres() {
        let month = received_at.format("%Y_%m");
        let partitions: Vec<(String, i64)> = db
            .rows("SELECT tableoid::regclass::text, count(*) FROM segmentation_contents GROUP BY 1")
            .await;
        assert_eq!(
            partitions,
            vec![(format!("segmentation_contents_{month}"), 5)]
        );
    }
    // Only each case's newest result is its latest.
    let latest: Vec<(i64,)> = db
        .rows("SELECT id FROM results WHERE latest ORDER BY id")
        .await;
    assert_eq!(latest, vec![(2,), (3,)]);
    let view: i64 = db
        .scalar("SELECT count(*) FROM case_structure_results WHERE structure = 'liver'")
        .await;
    assert_eq!(view, 2);
    // Rollups hold every result (as the rolling windows always counted them),
    // structures empty on both sides left out.
    for table in ["dice_daily", "dice_hourly"] {
        let rows: Vec<(String, i64, f64)> = db
            .rows(&format!(
                "SELECT structure, cases, dice_sum FROM {table} ORDER BY structure"
            ))
            .await;
        assert_eq!(rows.len(), 2, "{table}: {rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1), ("all", 3), "{table}");
        assert!((rows[0].2 - 2.3).abs() < 1e-9, "{table}: {rows:?}");
        assert_eq!((rows[1].0.as_str(), rows[1].1), ("liver", 3), "{table}");
        assert!((rows[1].2 - 2.05).abs() < 1e-9, "{table}: {rows:?}");
    }
    let uploads: Vec<(String, String)> = db
        .rows("SELECT site, role FROM site_uploads ORDER BY role")
        .await;
    assert_eq!(
        uploads,
        vec![
            ("a".to_owned(), "prediction".to_owned()),
            ("a".to_owned(), "reference".to_owned())
        ]
    );

    // The service reads them.
    for days in [1, 7] {
        let rolling = store.rolling_means(days).await.unwrap().dice;
        let liver = rolling
            .iter()
            .find(|r| r.0 == "a" && r.3 == "liver")
            .unwrap();
        assert!((liver.4 - 2.05 / 3.0).abs() < 1e-9, "{days}d: {rolling:?}");
        assert_eq!(liver.5, 3);
        assert!(rolling.iter().any(|r| r.0 == "all" && r.3 == "all"));
    }
    let listed = store
        .worst_cases(&CaseFilter {
            site: "a".into(),
            limit: 10,
            ..CaseFilter::default()
        })
        .await
        .unwrap();
    let order: Vec<(&str, Option<f64>)> = listed
        .iter()
        .map(|c| (c.case.as_str(), c.mean_dice))
        .collect();
    assert_eq!(order, vec![("c2", Some(0.6)), ("c1", Some(0.9))]);
    assert_eq!(listed[1].structures.len(), 2);
    // The dropped columns read back as stored, derived from the counts.
    // Rows stored before the probabilistic columns existed read back without.
    assert!(
        listed[1]
            .structures
            .iter()
            .all(|s| s.soft_dice.is_none() && s.ece.is_none() && s.reliability.is_none())
    );
    let liver = &listed[1].structures[0].metrics;
    assert_eq!(liver.name.as_deref(), Some("liver"));
    assert_eq!((liver.empty, liver.fp, liver.fn_), (Empty::None, 1, 2));
    assert_eq!(
        (liver.iou, liver.precision, liver.recall),
        (0.4, 2.0 / 3.0, 0.5)
    );
    let lesion = &listed[1].structures[1].metrics;
    assert_eq!(lesion.name.as_deref(), Some("Lesion"));
    assert_eq!((lesion.empty, lesion.fp, lesion.fn_), (Empty::Both, 0, 0));
    assert_eq!(
        (lesion.iou, lesion.precision, lesion.recall),
        (1.0, 1.0, 1.0)
    );
    // Listing by a structure reads the latest result only (the index walk
    // of PostgreSQL meets result 1's rows too).
    let by_liver = store
        .worst_cases(&CaseFilter {
            site: "a".into(),
            structure: Some("liver".into()),
            limit: 10,
            ..CaseFilter::default()
        })
        .await
        .unwrap();
    let dice: Vec<(&str, Option<f64>)> = by_liver
        .iter()
        .map(|c| (c.case.as_str(), Some(c.structures[0].metrics.dice)))
        .collect();
    assert_eq!(dice, vec![("c2", Some(0.5)), ("c1", Some(0.85))]);
    assert_eq!(store.last_uploads().await.unwrap().len(), 2);
    db.drop_db().await;
}

/// The baseline of the old detector updates: 100 Dice values from 0.8 to 0.899.
fn baseline() -> Baseline {
    Baseline::new((0..100).map(|i| 0.8 + f64::from(i) / 1000.0).collect()).unwrap()
}

/// A stream's profile in the old updates (the CUSUM's threshold is 0.5).
fn profile(structure_is_mean: bool) -> StreamProfile {
    StreamProfile {
        structure_is_mean,
        failure_threshold: 0.5,
        cases_per_day: 3.0,
    }
}

/// (site, structure, late, t, [(detector, input, statistic, limit, alarm)])
type OldStream = (
    &'static str,
    &'static str,
    bool,
    i32,
    Vec<(Detector, f64, f64, f64, bool)>,
);

fn old_streams() -> Vec<OldStream> {
    let structure = |t| {
        vec![
            (Detector::Cusum, 0.0, 1.0, 9.0, false),
            (Detector::GuardRail, 23.0, 0.851, 0.7, false),
            (Detector::PitEwma, 0.31, 0.45, 0.4, t > 5),
        ]
    };
    vec![
        ("a", "liver", true, 5, structure(5)),
        ("all", "liver", false, 9, structure(9)),
        (
            "a",
            "all",
            false,
            5,
            vec![(Detector::PitEwma, 0.6, 0.52, 0.4, false)],
        ),
    ]
}

/// A baseline and result 1's detector updates in the previous release's layout.
async fn old_detector_updates(db: &TestDb, received: &str) {
    db.execute(&format!(
        "INSERT INTO baselines (id, model, model_version, version, source, created_by, created_at)
         VALUES (1, 'm', 'v1', 1, 'frozen', 'test', '{received}')"
    ))
    .await;
    let values: Vec<String> = baseline().values().iter().map(f64::to_string).collect();
    let sample = if db.is_postgres() {
        format!("{{{}}}", values.join(","))
    } else {
        format!("[{}]", values.join(","))
    };
    for structure in ["liver", "all"] {
        db.execute(&format!(
            "INSERT INTO baseline_samples (baseline_id, structure, dice) VALUES (1, '{structure}', '{sample}')"
        ))
        .await;
    }
    for (site, structure, late, t, steps) in old_streams() {
        let designs = parameters(&baseline(), &profile(structure == "all"), 2000.0).designs;
        for (detector, input, statistic, limit, alarm) in steps {
            let design = designs.iter().find(|d| d.detector() == detector).unwrap();
            let context = serde_json::json!({
                "target_cases": 2000.0, "pairs": 7, "cases_per_day": 3.0, "late": late, "design": design
            });
            db.execute(&format!(
                "INSERT INTO detector_updates (site, model, model_version, structure, detector, result_id, baseline_id,
                                               t, input, statistic, limit_value, alarm, parameters, late, observed_at, at)
                 VALUES ('{site}', 'm', 'v1', '{structure}', '{detector}', 1, 1, {t}, {input}, {statistic}, {limit},
                         {alarm}, '{context}', {late}, '{received}', '{received}')",
                detector = detector.as_str(),
            ))
            .await;
        }
    }
}

/// Result 1's updates are one history row of three streams, each readable as
/// a stream history with its parameters and values.
async fn detector_history_moved(db: &TestDb, store: &Store) {
    let rows: i64 = db.scalar("SELECT count(*) FROM detector_history").await;
    let sets: i64 = db.scalar("SELECT count(*) FROM detector_parameters").await;
    assert_eq!((rows, sets), (1, 3));
    for (site, structure, late, t, steps) in old_streams() {
        let history = store
            .stream_history(
                "m",
                "v1",
                &segwatch::drift::incident::StreamId::dice(site, structure),
                1_000,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.steps.len(), 1, "{site}/{structure}");
        let step = &history.steps[0];
        assert_eq!(
            (step.result_id, step.t, step.late, step.pairs),
            (1, t as u32, late, 7)
        );
        let expected = parameters(&baseline(), &profile(structure == "all"), 2000.0);
        assert_eq!(
            serde_json::to_value(&*step.parameters).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
        let updates: Vec<StoredUpdate> = steps
            .iter()
            .map(|&(detector, input, statistic, limit, alarm)| StoredUpdate {
                detector,
                input: Some(input as f32),
                statistic: Some(statistic as f32),
                limit: Some(limit as f32),
                alarm,
            })
            .collect();
        assert_eq!(step.updates, updates, "{site}/{structure}");
        let dice = if structure == "all" { 0.8 } else { 0.7 };
        assert_eq!(step.dice, dice);
    }
}

/// The last migration before shadow mode, per backend.
fn before_shadow_mode(db: &TestDb) -> i64 {
    if db.is_postgres() { 13 } else { 7 }
}

#[tokio::test]
async fn an_upgrade_to_shadow_mode_keeps_uploads_and_flags_each_versions_latest_result() {
    let db = TestDb::new().await;
    db.migrate_to(before_shadow_mode(&db)).await;
    let received = at(Utc::now() - Duration::hours(1));
    let sha = |hex: &str| bytes_literal(&db, hex);
    db.execute(&format!(
        "INSERT INTO cases (id, site, case_key, created_at) VALUES (1, 'a', 'c1', '{received}')"
    ))
    .await;
    // A case predicted by v1, then by v2, and scored for both.
    for (id, role, revision, model, version) in [
        (1, "prediction", 1, "'m'", "'v1'"),
        (2, "prediction", 2, "'m'", "'v2'"),
        (3, "reference", 1, "NULL", "NULL"),
    ] {
        db.execute(&format!(
            "INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content_bytes, voxels,
                                        grid, model, model_version, observed_at, received_at)
             VALUES ({id}, 1, '{role}', {revision}, {sha}, 'nifti', 1, 8, '{{}}', {model}, {version},
                     '{received}', '{received}')",
            sha = sha(&format!("0{id}")),
        ))
        .await;
    }
    db.execute(&format!(
        "INSERT INTO jobs (id, case_id, prediction_id, reference_id, status, attempts, run_after, created_at, finished_at)
         VALUES (1, 1, 1, 3, 'done', 1, '{received}', '{received}', '{received}'),
                (2, 1, 2, 3, 'done', 1, '{received}', '{received}', '{received}')"
    ))
    .await;
    // Before shadow mode, only the newest result of the case was latest.
    for (id, version, mean, latest) in [(1, "v1", 0.7, "false"), (2, "v2", 0.9, "true")] {
        db.execute(&format!(
            "INSERT INTO results (id, job_id, case_id, site, model, model_version, surface, grid, mean_dice,
                                  observed_at, scored_at, latest)
             VALUES ({id}, {id}, 1, 'a', 'm', '{version}', 'boundary_voxel', '{{}}', {mean},
                     '{received}', '{received}', {latest})"
        ))
        .await;
    }

    let store = db.store();
    store.migrate().await.unwrap();
    let latest: Vec<(i64,)> = db
        .rows("SELECT id FROM results WHERE latest ORDER BY id")
        .await;
    assert_eq!(latest, vec![(1,), (2,)]);
    let kept: Vec<(i64, i32)> = db
        .rows("SELECT id, revision FROM segmentations ORDER BY id")
        .await;
    assert_eq!(kept, vec![(1, 1), (2, 2), (3, 1)]);
    let case = store.case_view("a", "c1").await.unwrap().unwrap();
    let versions: Vec<(&str, i32, Option<f64>)> = case
        .versions
        .iter()
        .map(|v| (v.model_version.as_str(), v.revision, v.mean_dice))
        .collect();
    assert_eq!(versions, vec![("v1", 1, Some(0.7)), ("v2", 2, Some(0.9))]);
    assert_eq!(case.mean_dice, Some(0.9));
    db.drop_db().await;
}

/// Every row of the tables migration 0020 partitions, as JSON text without
/// the `scored_at` the rows of results' rows gain, in a fixed order.
async fn history_rows(db: &TestDb) -> Vec<(String,)> {
    db.rows(
        "SELECT (to_jsonb(r))::text FROM (SELECT * FROM results ORDER BY id) r
         UNION ALL SELECT (to_jsonb(s) - 'scored_at')::text
         FROM (SELECT * FROM structure_results ORDER BY result_id, structure) s
         UNION ALL SELECT (to_jsonb(l) - 'scored_at')::text
         FROM (SELECT * FROM lesion_results ORDER BY result_id, structure) l
         UNION ALL SELECT (to_jsonb(h) - 'scored_at')::text
         FROM (SELECT * FROM detector_history ORDER BY result_id) h",
    )
    .await
}

#[tokio::test]
async fn an_upgrade_to_monthly_results_partitions_keeps_every_row_in_its_month() {
    let Some(db) = TestDb::postgres_only(
        "an_upgrade_to_monthly_results_partitions_keeps_every_row_in_its_month",
    )
    .await
    else {
        return;
    };
    // The schema just before migration 0020.
    db.migrate_to(19).await;
    // Case 1 scored 100 days ago, case 2 now; each result with a structure, a lesion-wise and
    // a detector-history row.
    let times = [
        at(Utc::now() - Duration::days(100)),
        at(Utc::now() - Duration::hours(1)),
    ];
    for (case, when) in [1, 2].into_iter().zip(&times) {
        let (prediction, reference) = (case * 2 - 1, case * 2);
        let statements = format!(
            "INSERT INTO cases (id, site, case_key, created_at) VALUES ({case}, 'a', 'c{case}', '{when}');
             INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                        model, model_version, reader, observed_at, received_at)
             VALUES ({prediction}, {case}, 'prediction', 1, decode('0{prediction}', 'hex'), 'nifti', 1, 8, '{{}}',
                     'm', 'v1', NULL, '{when}', '{when}'),
                    ({reference}, {case}, 'reference', 1, decode('0{reference}', 'hex'), 'nifti', 1, 8, '{{}}',
                     NULL, NULL, 'default', '{when}', '{when}');
             INSERT INTO jobs (id, case_id, prediction_id, reference_id, status, attempts, run_after, created_at)
             VALUES ({case}, {case}, {prediction}, {reference}, 'done', 1, '{when}', '{when}');
             INSERT INTO results (id, job_id, case_id, site, model, model_version, surface, grid, mean_dice,
                                  acquisition, observed_at, scored_at, drift_pending)
             VALUES ({case}, {case}, {case}, 'a', 'm', 'v1', 'voxel', '{{}}', 0.{case}, '{{\"protocol\": \"p\"}}',
                     '{when}', '{when}', false);
             INSERT INTO structure_results (result_id, position, structure, pred_voxels, ref_voxels, tp,
                                            pred_volume_ml, ref_volume_ml, dice, tolerance_mm, site)
             VALUES ({case}, 0, 'liver', 3, 4, 2, 0.3, 0.4, 0.{case}, 1, 'a'),
                    ({case}, 1, 'spleen', 0, 0, 0, 0, 0, NULL, 1, 'a');
             INSERT INTO lesion_results (result_id, structure, metrics) VALUES ({case}, 'mets', '{{\"lesions\": 2}}');
             INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals)
             VALUES ({case}, '{when}', 3, '{{1}}', '{{{case}}}', '{{0}}', '{{0.5,1,2}}')"
        );
        for statement in statements.split(";\n") {
            db.execute(statement).await;
        }
    }
    let before = history_rows(&db).await;
    assert_eq!(before.len(), 2 + 4 + 2 + 2);

    db.store().migrate().await.unwrap();
    assert_eq!(history_rows(&db).await, before);
    // Each row is in its result's month: the migration made a partition for
    // every month of the history.
    let (old, month) = (
        (Utc::now() - Duration::days(100)).format("%Y_%m"),
        Utc::now().format("%Y_%m"),
    );
    for (table, id) in [
        ("results", "id"),
        ("structure_results", "result_id"),
        ("lesion_results", "result_id"),
        ("detector_history", "result_id"),
    ] {
        let placed: Vec<(i64, String)> = db
            .rows(&format!(
                "SELECT DISTINCT {id}, tableoid::regclass::text FROM {table} ORDER BY 1"
            ))
            .await;
        assert_eq!(
            placed,
            [
                (1, format!("{table}_{old}")),
                (2, format!("{table}_{month}"))
            ]
        );
    }
    // The view reads both, and new results keep numbering from the sequence.
    let view: i64 = db
        .scalar("SELECT count(*) FROM case_structure_results")
        .await;
    assert_eq!(view, 4);
    let sequence: Option<String> = db
        .scalar("SELECT pg_get_serial_sequence('results', 'id')")
        .await;
    assert_eq!(sequence.as_deref(), Some("public.results_id_seq"));
    db.drop_db().await;
}
