//! One result per job, held by the job's lease (PostgreSQL's partitioned
//! `results` cannot make `job_id` unique): a worker whose lease was lost
//! stores nothing, on both stores.

use std::time::Duration;

use segwatch::metrics::SurfaceMode;
use segwatch::metrics::case::CaseScore;
use segwatch::volume::Grid;

use crate::common::TestDb;

/// A case with a prediction and a reference and its queued job, as an upload
/// leaves them (the stored files are not needed to complete the job).
async fn queued_job(db: &TestDb) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let sha = |id: i64| {
        if db.is_postgres() {
            format!("decode('{id:02x}', 'hex')")
        } else {
            format!("X'{id:02x}'")
        }
    };
    db.execute(&format!(
        "INSERT INTO cases (id, site, case_key, created_at) VALUES (1, 's', 'c', '{now}')"
    ))
    .await;
    for (id, role, model, version, reader) in [
        (1, "prediction", "'m'", "'v1'", "NULL"),
        (2, "reference", "NULL", "NULL", "'default'"),
    ] {
        db.execute(&format!(
            "INSERT INTO segmentations (id, case_id, role, revision, sha256, format, content_bytes, voxels, grid,
                                        model, model_version, reader, observed_at, received_at)
             VALUES ({id}, 1, '{role}', 1, {sha}, 'nifti', 1, 8, '{{}}', {model}, {version}, {reader}, '{now}', '{now}')",
            sha = sha(id),
        ))
        .await;
    }
    db.execute(&format!(
        "INSERT INTO jobs (id, case_id, prediction_id, reference_id, status, attempts, run_after, created_at)
         VALUES (1, 1, 1, 2, 'queued', 0, '{now}', '{now}')"
    ))
    .await;
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_stores_no_second_result() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    queued_job(&db).await;
    let outcome = CaseScore {
        surface: SurfaceMode::Voxel,
        grid: Grid::axis_aligned([2, 2, 2], [1.0, 1.0, 1.0], 3),
        mean_dice: Some(0.5),
        structures: Vec::new(),
        lesions: Vec::new(),
    };
    // A stalls past its (zero) lease; B claims the job again.
    let a = store.claim_job(Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = store
        .claim_job(Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.id, b.id, b.attempts), (1, 1, 2));
    let inputs = store.job_inputs(&b).await.unwrap();
    // A finishes first: nothing stored. B stores the result; its second try,
    // and A's again, store nothing, and the done job is not claimed again.
    assert!(
        !store
            .complete_job(&a, &inputs, Some(&outcome), &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .complete_job(&b, &inputs, Some(&outcome), &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_job(&b, &inputs, Some(&outcome), &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_job(&a, &inputs, Some(&outcome), &[])
            .await
            .unwrap()
    );
    assert!(store.claim_job(Duration::ZERO).await.unwrap().is_none());
    let results: Vec<(i64, f64)> = db.rows("SELECT job_id, mean_dice FROM results").await;
    assert_eq!(results, [(1, 0.5)]);
    db.drop_db().await;
}
