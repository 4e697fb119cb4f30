//! Retention of cases and incidents past their configured days, on both stores.

use chrono::{Datelike, Duration, Months, NaiveDate, Utc};
use segwatch::store::{DroppedMonths, ModelBounds, NewSegmentation, Role, SegRole, Store};
use sqlx::{Connection, Executor, PgConnection};

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
/// the drift feed leave them (on PostgreSQL with the result's `scored_at`).
async fn history_rows(db: &TestDb, result: i64) {
    let scored = if db.is_postgres() { ", scored_at" } else { "" };
    db.execute(&format!(
        "INSERT INTO lesion_results (result_id, structure, metrics{scored})
         SELECT id, 'mets', '{{}}'{scored} FROM results WHERE id = {result}"
    ))
    .await;
    let arrays = if db.is_postgres() { "'{}'" } else { "'[]'" };
    db.execute(&format!(
        "INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals{scored})
         SELECT id, '{}', 1, {arrays}, {arrays}, {arrays}, {arrays}{scored} FROM results WHERE id = {result}",
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
    table_month("segmentation_contents", month)
}

/// The partition of `table` for the month starting on `month` and its bounds.
fn table_month(table: &str, month: NaiveDate) -> (String, String, String) {
    let next = month + Months::new(1);
    (
        format!("{table}_{}", month.format("%Y_%m")),
        format!("{month}T00:00:00Z"),
        format!("{next}T00:00:00Z"),
    )
}

/// The tables partitioned by the month of their result's `scored_at`.
const RESULT_TABLES: [&str; 4] = [
    "results",
    "structure_results",
    "lesion_results",
    "detector_history",
];

/// Job `job`'s result (id `job`), scored at `when`, with a structure, a
/// lesion-wise and a detector-history row (PostgreSQL).
async fn scored_result(db: &TestDb, job: i64, when: &str, drift_pending: bool) {
    db.execute(&format!(
        "INSERT INTO results (id, job_id, case_id, site, model, model_version, surface, grid, mean_dice,
                              observed_at, scored_at, drift_pending)
         SELECT id, id, case_id, 's', 'm', 'v1', 'voxel', '{{}}', 0.5, '{when}', '{when}', {drift_pending}
         FROM jobs WHERE id = {job}"
    ))
    .await;
    db.execute(&format!(
        "INSERT INTO structure_results (result_id, position, structure, pred_voxels, ref_voxels, tp,
                                        pred_volume_ml, ref_volume_ml, dice, tolerance_mm, site, scored_at)
         VALUES ({job}, 0, 'liver', 1, 1, 1, 1, 1, 1, 1, 's', '{when}')"
    ))
    .await;
    history_rows(db, job).await;
}

/// Each table's result ids and the partition each row is in.
async fn result_partitions(db: &TestDb) -> Vec<Vec<(i64, String)>> {
    let mut tables = Vec::new();
    for table in RESULT_TABLES {
        let id = if table == "results" {
            "id"
        } else {
            "result_id"
        };
        tables.push(
            db.rows(&format!(
                "SELECT {id}, tableoid::regclass::text FROM {table} ORDER BY {id}"
            ))
            .await,
        );
    }
    tables
}

/// The rows of `result_partitions` for `(result, month)`: a month's suffix
/// or "default".
fn placed(rows: &[(i64, &str)]) -> Vec<Vec<(i64, String)>> {
    RESULT_TABLES
        .iter()
        .map(|table| {
            rows.iter()
                .map(|&(id, month)| (id, format!("{table}_{month}")))
                .collect()
        })
        .collect()
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
    let dropped = store.maintain_partitions(30, 0).await.unwrap();
    assert_eq!(dropped.results, 0);
    let months = dropped.files;
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
    // Nor results (a referenced partition is detached before it is dropped).
    for table in &RESULT_TABLES[1..] {
        let (child, ..) = table_month(table, this_month);
        db.execute(&format!("DROP TABLE {child}")).await;
    }
    let (results, ..) = table_month("results", this_month);
    db.execute(&format!("ALTER TABLE results DETACH PARTITION {results}"))
        .await;
    db.execute(&format!("DROP TABLE {results}")).await;
    stored_files(&db, 1, true, &days_ago(0)).await;
    scored_result(&db, 1, &days_ago(0), false).await;
    let default = "segmentation_contents_default".to_owned();
    assert_eq!(files(&db).await, [(1, default.clone()), (2, default)]);
    assert_eq!(result_partitions(&db).await, placed(&[(1, "default")]));
    assert_eq!(
        store.maintain_partitions(30, 0).await.unwrap(),
        DroppedMonths::default()
    );
    assert_eq!(files(&db).await, [(1, name.clone()), (2, name)]);
    let month = this_month.format("%Y_%m").to_string();
    assert_eq!(result_partitions(&db).await, placed(&[(1, &month)]));
    // This month and the next two have partitions; running again changes nothing.
    for later in 0..3 {
        for table in ["segmentation_contents"].iter().chain(&RESULT_TABLES) {
            let (name, ..) = table_month(table, this_month + Months::new(later));
            let exists: Option<String> = db
                .scalar(&format!("SELECT to_regclass('{name}')::text"))
                .await;
            assert_eq!(exists.as_deref(), Some(name.as_str()));
        }
    }
    assert_eq!(
        store.maintain_partitions(30, 0).await.unwrap(),
        DroppedMonths::default()
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_month_of_results_past_retention_goes_whole_and_active_cases_keep_theirs() {
    let Some(db) = TestDb::postgres_only(
        "a_month_of_results_past_retention_goes_whole_and_active_cases_keep_theirs",
    )
    .await
    else {
        return;
    };
    let store = db.store();
    store.migrate().await.unwrap();
    let old_month = results_month_100_days_ago(&db).await;
    let (old, now) = (days_ago(100), days_ago(0));
    // Cases 1, 3 and 5 scored 100 days ago; 3 has had an upload since and 5
    // a result not yet fed to the detectors; case 7 was scored now.
    for (job, when, drift_pending) in [
        (1, &old, false),
        (3, &old, false),
        (5, &old, true),
        (7, &now, false),
    ] {
        stored_files(&db, job, true, when).await;
        scored_result(&db, job, when, drift_pending).await;
    }
    db.execute(&format!(
        "INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                    reader, observed_at, received_at)
         VALUES (9, 3, 'reference', 2, decode('09', 'hex'), 'nifti', 1, 8, '{{}}', 'default', '{now}', '{now}')"
    ))
    .await;
    let month = old_month.format("%Y_%m").to_string();
    let this_month = Utc::now().format("%Y_%m").to_string();
    let before = placed(&[(1, &month), (3, &month), (5, &month), (7, &this_month)]);
    assert_eq!(result_partitions(&db).await, before);
    // Results kept for ever (no results retention): the month stays.
    assert_eq!(store.maintain_partitions(30, 0).await.unwrap().results, 0);
    assert_eq!(result_partitions(&db).await, before);
    // Kept 60 days: the month goes whole, case 1's result with it; the results
    // of the active cases 3 and 5 move to DEFAULT with all their rows.
    assert_eq!(store.maintain_partitions(30, 60).await.unwrap().results, 1);
    for table in RESULT_TABLES {
        let (name, ..) = table_month(table, old_month);
        let gone: Option<String> = db
            .scalar(&format!("SELECT to_regclass('{name}')::text"))
            .await;
        assert_eq!(gone, None, "{table}");
    }
    assert_eq!(
        result_partitions(&db).await,
        placed(&[(3, "default"), (5, "default"), (7, &this_month)])
    );
    let kept: Vec<(i64, bool)> = db
        .rows("SELECT id, drift_pending FROM results ORDER BY id")
        .await;
    assert_eq!(kept, [(3, false), (5, true), (7, false)]);
    // Case 1, left without results, goes with the case purge; running again
    // drops nothing more.
    assert_eq!(store.purge_expired_cases(60, 10).await.unwrap(), 1);
    assert_eq!(count(&db, "cases", "id", "1, 3, 5, 7").await, 3);
    assert_eq!(store.maintain_partitions(30, 60).await.unwrap().results, 0);
    db.drop_db().await;
}

/// Creates the month of results 100 days ago (PostgreSQL), as the service
/// created it when that month was ahead; returns its first day.
async fn results_month_100_days_ago(db: &TestDb) -> NaiveDate {
    let month = (Utc::now() - Duration::days(100))
        .date_naive()
        .with_day(1)
        .unwrap();
    for table in RESULT_TABLES {
        let (name, from, to) = table_month(table, month);
        db.execute(&format!(
            "CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{from}') TO ('{to}')"
        ))
        .await;
    }
    month
}

/// Sessions of `db` waiting for a lock.
async fn lock_waits(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
}

/// Waits (up to 5 s, within the drop's 10 s `lock_timeout`) until `sessions`
/// sessions of `db` wait for a lock or `done` says the awaited work ended
/// without waiting.
async fn until_waiting(db: &TestDb, sessions: i64, done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() || lock_waits(db).await >= sessions {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A connection of its own to `db` (PostgreSQL).
async fn connect(db: &TestDb) -> PgConnection {
    PgConnection::connect(&db.env().1).await.unwrap()
}

/// A second reference upload to case `c{case}` of `stored_files`, as the
/// ingest path stores it.
fn reference_upload(case: i64) -> NewSegmentation {
    NewSegmentation {
        site: "s".to_owned(),
        case_key: format!("c{case}"),
        role: SegRole::Reference,
        sha256: vec![0x99],
        format: "nifti",
        content: vec![0x99],
        probabilities: None,
        voxels: 8,
        grid: serde_json::json!({}),
        model: None,
        model_version: None,
        reader: Some("default".to_owned()),
        acquisition: serde_json::json!({}),
        provenance: None,
        observed_at: None,
        sop_instance_uid: None,
        structures: Vec::new(),
    }
}

const BOUNDS: ModelBounds = ModelBounds {
    models: 16,
    versions: 4,
    active_days: 30,
    structures: 64,
};

/// A PostgreSQL database (None on the embedded store) whose case 1 was
/// uploaded and scored 100 days ago, in that month's partitions; with its
/// store and that month. Ids stored by the service come after the fixture's.
async fn idle_case_100_days_ago(test: &str) -> Option<(TestDb, Store, NaiveDate)> {
    let db = TestDb::postgres_only(test).await?;
    let store = db.store();
    store.migrate().await.unwrap();
    let month = results_month_100_days_ago(&db).await;
    let old = days_ago(100);
    stored_files(&db, 1, true, &old).await;
    scored_result(&db, 1, &old, false).await;
    for sequence in [
        "cases_id_seq",
        "segmentations_id_seq",
        "jobs_id_seq",
        "results_id_seq",
    ] {
        db.execute(&format!("SELECT setval('{sequence}', 100)"))
            .await;
    }
    Some((db, store, month))
}

/// References stored for case `case`.
async fn references(db: &TestDb, case: i64) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM segmentations WHERE case_id = {case} AND role = 'reference'"
    ))
    .await
}

#[tokio::test]
async fn an_upload_in_progress_when_a_month_of_results_drops_keeps_the_case_results() {
    let Some((db, store, month)) = idle_case_100_days_ago(
        "an_upload_in_progress_when_a_month_of_results_drops_keeps_the_case_results",
    )
    .await
    else {
        return;
    };
    // Case 1, idle for 100 days, gets an upload, held in progress by a
    // session that has locked the case's row.
    let mut session = connect(&db).await;
    let mut holder = session.begin().await.unwrap();
    holder
        .execute("SELECT id FROM cases WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let uploader = store.clone();
    let uploading =
        tokio::spawn(async move { uploader.store_upload(&reference_upload(1), BOUNDS).await });
    until_waiting(&db, 1, || uploading.is_finished()).await;
    let dropper = store.clone();
    let dropping = tokio::spawn(async move { dropper.maintain_partitions(30, 60).await });
    // The drop waits for the upload, which commits once the row is free:
    // the case is active and keeps its result, moved to DEFAULT with its rows.
    until_waiting(&db, 2, || dropping.is_finished()).await;
    holder.commit().await.unwrap();
    uploading.await.unwrap().unwrap().unwrap();
    assert_eq!(dropping.await.unwrap().unwrap().results, 0);
    assert_eq!(references(&db, 1).await, 2);
    assert_eq!(result_partitions(&db).await, placed(&[(1, "default")]));
    let (name, ..) = table_month("results", month);
    let gone: Option<String> = db
        .scalar(&format!("SELECT to_regclass('{name}')::text"))
        .await;
    assert_eq!(gone, None);
    db.drop_db().await;
}

#[tokio::test]
async fn an_upload_while_a_month_of_results_drops_waits_for_the_drop() {
    let Some((db, store, month)) =
        idle_case_100_days_ago("an_upload_while_a_month_of_results_drops_waits_for_the_drop").await
    else {
        return;
    };
    // A reader of the month's structure rows holds the drop once it has
    // read which results to keep (none: case 1 is idle).
    let (structures, ..) = table_month("structure_results", month);
    let mut session = connect(&db).await;
    let mut reader = session.begin().await.unwrap();
    reader
        .execute(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {structures}"
        )))
        .await
        .unwrap();
    let dropper = store.clone();
    let dropping = tokio::spawn(async move { dropper.maintain_partitions(30, 60).await });
    until_waiting(&db, 1, || dropping.is_finished()).await;
    // An upload to case 1 now waits until the drop has committed, rather
    // than make the case active after the drop found it idle.
    let uploader = store.clone();
    let uploading =
        tokio::spawn(async move { uploader.store_upload(&reference_upload(1), BOUNDS).await });
    until_waiting(&db, 2, || uploading.is_finished()).await;
    assert!(!uploading.is_finished(), "the upload did not wait");
    reader.commit().await.unwrap();
    assert_eq!(dropping.await.unwrap().unwrap().results, 1);
    uploading.await.unwrap().unwrap().unwrap();
    assert_eq!(references(&db, 1).await, 2);
    assert_eq!(count(&db, "results", "case_id", "1").await, 0);
    db.drop_db().await;
}
