//! Upgrading a database that holds data: the schema of the previous release,
//! filled with scored cases, then every migration; nothing is lost and the
//! rollups, the latest-result flag and the last-upload table are filled from
//! the history, and the stored files move to a table of their own.

use chrono::{Duration, Utc};
use segwatch::store::CaseFilter;

use crate::common::TestDb;

/// The last migration of the release before rollups, per backend.
fn previous_release(db: &TestDb) -> i64 {
    if db.is_postgres() { 8 } else { 2 }
}

/// A time as both stores accept it in SQL text.
fn at(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[tokio::test]
async fn an_upgrade_keeps_scored_cases_and_fills_the_rollups_from_them() {
    let db = TestDb::new().await;
    db.migrate_to(previous_release(&db)).await;
    let observed = at(Utc::now() - Duration::hours(2));
    let received = at(Utc::now() - Duration::hours(1));
    let bytes = |hex: &str| {
        if db.is_postgres() {
            format!("decode('{hex}', 'hex')")
        } else {
            format!("X'{hex}'")
        }
    };
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
        for (position, structure, empty, dice) in [
            (0, "liver", "none", liver.to_string()),
            (1, "lesion", "both", "NULL".to_owned()),
        ] {
            db.execute(&format!(
                "INSERT INTO structure_results (result_id, position, structure, empty, pred_voxels, ref_voxels, tp, fp,
                                                fn, pred_volume_ml, ref_volume_ml, dice, tolerance_mm)
                 VALUES ({id}, {position}, '{structure}', '{empty}', 1, 1, 1, 0, 0, 1.0, 1.0, {dice}, 1.0)"
            ))
            .await;
        }
    }

    let store = db.store();
    store.migrate().await.unwrap();

    // Nothing lost.
    let means: Vec<(i64, f64)> = db
        .rows("SELECT id, mean_dice FROM results ORDER BY id")
        .await;
    assert_eq!(means, vec![(1, 0.8), (2, 0.9), (3, 0.6)]);
    let stored: i64 = db.scalar("SELECT count(*) FROM structure_results").await;
    assert_eq!(stored, 6);
    // The stored files moved to their own table, to be purged by deleting rows.
    let files: Vec<(i64,)> = db
        .rows("SELECT segmentation_id FROM segmentation_contents ORDER BY segmentation_id")
        .await;
    assert_eq!(files, vec![(1,), (2,), (3,), (4,), (5,)]);
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
        let rolling = store.rolling_dice(days).await.unwrap();
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
    assert_eq!(store.last_uploads().await.unwrap().len(), 2);
    db.drop_db().await;
}
