//! Retention of cases and incidents past their configured days, on both stores.

use chrono::{Duration, Utc};
use segwatch::store::Role;

use crate::common::{TestApp, TestDb, read_fixture};

/// A time `days` ago as both stores accept it in SQL text.
fn days_ago(days: i64) -> String {
    (Utc::now() - Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Rows of `table` whose `column` is in the id list `ids` (`1, 2`).
async fn count(db: &TestDb, table: &str, column: &str, ids: &str) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM {table} WHERE {column} IN ({ids})"
    ))
    .await
}

/// A lesion-wise and a detector-history row for a result, as the worker and
/// the drift feed leave them.
async fn history_rows(db: &TestDb, result: i64) {
    db.execute(&format!(
        "INSERT INTO lesion_results (result_id, structure, metrics) VALUES ({result}, 'mets', '{{}}')"
    ))
    .await;
    let arrays = if db.is_postgres() { "'{}'" } else { "'[]'" };
    db.execute(&format!(
        "INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals)
         VALUES ({result}, '{}', 1, {arrays}, {arrays}, {arrays}, {arrays})",
        days_ago(0)
    ))
    .await;
}

#[tokio::test]
async fn cases_idle_past_the_results_retention_go_with_all_their_rows_and_the_rest_stay() {
    let app = TestApp::start().await;
    let db = &app.db;
    let key = app.key(Role::Ingest, Some("s")).await;
    let pred = read_fixture("reference/cases/P09_pred.nii.gz");
    let reference = read_fixture("reference/cases/P09_ref.nii.gz");
    for case in ["old", "new"] {
        for (role, body) in [("prediction", &pred), ("reference", &reference)] {
            let response = app.upload(&key, "s", case, role, body.clone()).await;
            assert_eq!(response.status(), 202);
        }
        assert_eq!(app.wait_scored("s", case).await["status"], "scored");
    }
    let response = app
        .upload(&key, "s", "unpaired", "prediction", pred.clone())
        .await;
    assert_eq!(response.status(), 202);
    let case_id = |key: &str| format!("(SELECT id FROM cases WHERE case_key = '{key}')");
    let result_of = |key: &str| format!("SELECT id FROM results WHERE case_id = {}", case_id(key));
    let old_result: i64 = db.scalar(&result_of("old")).await;
    let new_result: i64 = db.scalar(&result_of("new")).await;
    history_rows(db, old_result).await;
    history_rows(db, new_result).await;
    let old_case: i64 = db.scalar(&format!("SELECT {}", case_id("old"))).await;
    let unpaired: i64 = db.scalar(&format!("SELECT {}", case_id("unpaired"))).await;
    let segmentations: Vec<(i64,)> = db
        .rows(&format!(
            "SELECT id FROM segmentations WHERE case_id IN ({old_case}, {unpaired})"
        ))
        .await;
    assert_eq!(segmentations.len(), 3);
    // 'old' and 'unpaired' were last touched 100 days ago; 'old' was not yet
    // fed to the drift detectors.
    let then = days_ago(100);
    let both = format!("{old_case}, {unpaired}");
    for statement in [
        format!("UPDATE cases SET created_at = '{then}' WHERE id IN ({both})"),
        format!("UPDATE segmentations SET received_at = '{then}' WHERE case_id IN ({both})"),
        format!(
            "UPDATE results SET scored_at = '{then}', drift_pending = true WHERE case_id = {old_case}"
        ),
    ] {
        db.execute(&statement).await;
    }
    // A result the detectors have not seen keeps its case.
    assert_eq!(app.store.purge_expired_cases(31, 10).await.unwrap(), 1);
    let (status, _) = app.get(&key, "/v1/sites/s/cases/unpaired").await;
    assert_eq!(status, 404);
    assert_eq!(app.get(&key, "/v1/sites/s/cases/old").await.0, 200);
    // Once fed, it goes, oldest first in batches.
    db.execute(&format!(
        "UPDATE results SET drift_pending = false WHERE case_id = {old_case}"
    ))
    .await;
    assert_eq!(app.store.purge_expired_cases(200, 10).await.unwrap(), 0);
    assert_eq!(app.store.purge_expired_cases(31, 1).await.unwrap(), 1);
    assert_eq!(app.store.purge_expired_cases(31, 1).await.unwrap(), 0);
    assert_eq!(app.get(&key, "/v1/sites/s/cases/old").await.0, 404);
    let result = old_result.to_string();
    let segmentation_ids = segmentations
        .iter()
        .map(|(id,)| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for (table, column, ids) in [
        ("detector_history", "result_id", &result),
        ("lesion_results", "result_id", &result),
        ("structure_results", "result_id", &result),
        ("results", "id", &result),
        ("jobs", "case_id", &both),
        (
            "segmentation_contents",
            "segmentation_id",
            &segmentation_ids,
        ),
        ("segmentations", "case_id", &both),
        ("cases", "id", &both),
    ] {
        assert_eq!(count(db, table, column, ids).await, 0, "{table}");
    }
    // The recent case keeps everything.
    let (status, new) = app.get(&key, "/v1/sites/s/cases/new").await;
    assert_eq!(
        (status, &new["status"]),
        (200, &serde_json::json!("scored"))
    );
    let result = new_result.to_string();
    for table in ["detector_history", "lesion_results"] {
        assert_eq!(count(db, table, "result_id", &result).await, 1, "{table}");
    }
    app.finish().await;
}

#[tokio::test]
async fn incidents_resolved_past_their_retention_go_and_the_others_stay() {
    let app = TestApp::start().await;
    let db = &app.db;
    let (long_ago, lately) = (days_ago(100), days_ago(5));
    for (id, resolved) in [
        (1, format!("'{long_ago}'")),
        (2, format!("'{lately}'")),
        (3, "NULL".to_owned()),
    ] {
        db.execute(&format!(
            "INSERT INTO incidents (id, site, model, model_version, structure, detector, opened_at, observed_at,
                                    last_alarm_at, statistic, limit_value, resolved_at)
             VALUES ({id}, 's', 'm', 'v1', 'liver', 'cusum', '{long_ago}', '{long_ago}', '{long_ago}', 5, 4, {resolved})"
        ))
        .await;
        db.execute(&format!(
            "INSERT INTO incident_streams (incident_id, site, structure, detector, first_alarm_at, last_alarm_at)
             VALUES ({id}, 's', 'liver', 'cusum', '{long_ago}', '{long_ago}')"
        ))
        .await;
    }
    assert_eq!(app.store.purge_resolved_incidents(30).await.unwrap(), 1);
    let kept: Vec<(i64,)> = db.rows("SELECT id FROM incidents ORDER BY id").await;
    assert_eq!(kept, [(2,), (3,)]);
    assert_eq!(
        count(db, "incident_streams", "incident_id", "1, 2, 3").await,
        2
    );
    app.finish().await;
}
