//! Retention of cases and incidents past their configured days, on both stores.

use chrono::{Datelike, Duration, Months, NaiveDate, Utc};
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

/// A case with a stored prediction (id `first`) and, with `paired`, a
/// reference (`first + 1`) scored in a done job, all received at `when`.
async fn stored_files(db: &TestDb, first: i64, paired: bool, when: &str) {
    let hex = |id: i64| {
        if db.is_postgres() {
            format!("decode('{id:02x}', 'hex')")
        } else {
            format!("X'{id:02x}'")
        }
    };
    db.execute(&format!(
        "INSERT INTO cases (id, site, case_key, created_at) VALUES ({first}, 's', 'c{first}', '{when}')"
    ))
    .await;
    let roles: &[(i64, &str)] = if paired {
        &[(first, "prediction"), (first + 1, "reference")]
    } else {
        &[(first, "prediction")]
    };
    for &(id, role) in roles {
        db.execute(&format!(
            "INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                        model, model_version, reader, observed_at, received_at)
             VALUES ({id}, {first}, '{role}', 1, {sha}, 'nifti', 1, 8, '{{}}', 'm', 'v1', {reader}, '{when}', '{when}')",
            sha = hex(id),
            // A reference has a reader (the default one), a prediction none.
            reader = if role == "reference" { "'default'" } else { "NULL" },
        ))
        .await;
        db.execute(&format!(
            "INSERT INTO segmentation_contents (segmentation_id, received_at, content) VALUES ({id}, '{when}', {})",
            hex(id)
        ))
        .await;
    }
    if paired {
        db.execute(&format!(
            "INSERT INTO jobs (id, case_id, prediction_id, reference_id, status, attempts, run_after, created_at)
             VALUES ({first}, {first}, {first}, {}, 'done', 1, '{when}', '{when}')",
            first + 1
        ))
        .await;
    }
}

/// The partition of the month starting on `month` and its bounds, as the
/// service names them.
fn month_partition(month: NaiveDate) -> (String, String, String) {
    let next = month + Months::new(1);
    (
        format!("segmentation_contents_{}", month.format("%Y_%m")),
        format!("{month}T00:00:00Z"),
        format!("{next}T00:00:00Z"),
    )
}

/// Stored files and the partition each is in ("" on the embedded store).
async fn files(db: &TestDb) -> Vec<(i64, String)> {
    let partition = if db.is_postgres() {
        "tableoid::regclass::text"
    } else {
        "''"
    };
    db.rows(&format!(
        "SELECT segmentation_id, {partition} FROM segmentation_contents ORDER BY segmentation_id"
    ))
    .await
}

#[tokio::test]
async fn stored_files_of_scored_jobs_past_retention_go_and_the_others_stay() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    let old = Utc::now() - Duration::days(100);
    let old_month = old.date_naive().with_day(1).unwrap();
    if db.is_postgres() {
        // As the service created it when that month was ahead.
        let (name, from, to) = month_partition(old_month);
        db.execute(&format!(
            "CREATE TABLE {name} PARTITION OF segmentation_contents FOR VALUES FROM ('{from}') TO ('{to}')"
        ))
        .await;
    }
    let (old, now) = (days_ago(100), days_ago(0));
    stored_files(&db, 1, true, &old).await;
    stored_files(&db, 3, false, &old).await;
    stored_files(&db, 4, true, &now).await;
    // As the hourly purge runs: whole months, then batches. PostgreSQL drops
    // the old month's partition and deletes nothing row by row; the embedded
    // store deletes the same files in its batches.
    let months = store.maintain_partitions(30).await.unwrap();
    let batches = store.purge_scored(30, 10).await.unwrap();
    assert_eq!(months + batches, 2);
    let kept: Vec<i64> = files(&db).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(kept, [3, 4, 5]);
    if db.is_postgres() {
        assert_eq!((months, batches), (2, 0));
        let (old_partition, ..) = month_partition(old_month);
        let gone: Option<String> = db
            .scalar(&format!("SELECT to_regclass('{old_partition}')::text"))
            .await;
        assert_eq!(gone, None);
        // The unpaired prediction waits in the DEFAULT partition; this
        // month's files stay in theirs.
        let (this_month, ..) = month_partition(Utc::now().date_naive().with_day(1).unwrap());
        assert_eq!(
            files(&db).await,
            [
                (3, "segmentation_contents_default".to_owned()),
                (4, this_month.clone()),
                (5, this_month),
            ]
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn a_month_without_its_partition_gets_one_with_the_files_the_default_took() {
    let Some(db) = TestDb::postgres_only(
        "a_month_without_its_partition_gets_one_with_the_files_the_default_took",
    )
    .await
    else {
        return;
    };
    let store = db.store();
    store.migrate().await.unwrap();
    // No service ran while this month began: its files go to DEFAULT.
    let this_month = Utc::now().date_naive().with_day(1).unwrap();
    let (name, ..) = month_partition(this_month);
    db.execute(&format!("DROP TABLE {name}")).await;
    stored_files(&db, 1, true, &days_ago(0)).await;
    let default = "segmentation_contents_default".to_owned();
    assert_eq!(files(&db).await, [(1, default.clone()), (2, default)]);
    assert_eq!(store.maintain_partitions(30).await.unwrap(), 0);
    assert_eq!(files(&db).await, [(1, name.clone()), (2, name)]);
    // This month and the next two have partitions; running again changes nothing.
    for later in 0..3 {
        let (name, ..) = month_partition(this_month + Months::new(later));
        let exists: Option<String> = db
            .scalar(&format!("SELECT to_regclass('{name}')::text"))
            .await;
        assert_eq!(exists.as_deref(), Some(name.as_str()));
    }
    assert_eq!(store.maintain_partitions(30).await.unwrap(), 0);
    db.drop_db().await;
}
