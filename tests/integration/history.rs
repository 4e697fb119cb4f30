//! Replaying an alert from the stored detector history: a real drift through
//! the service, then the alerting stream recomputed from what was stored, by
//! the store and engine and through the API.

use chrono::{DateTime, Utc};
use segwatch::drift::replay::first_alarm;
use segwatch::store::StoredUpdate;

use crate::drift_api::drifted_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_replays_from_the_stored_history() {
    let app = drifted_app().await;
    let (_, incidents) = app.get(&app.admin_key, "/v1/incidents?state=all").await;
    let incident = &incidents.as_array().unwrap()[0];
    let (site, structure) = (
        incident["site"].as_str().unwrap(),
        incident["structure"].as_str().unwrap(),
    );
    let history = app
        .db
        .store()
        .stream_history(
            "simnet",
            "1.0",
            &segwatch::drift::incident::StreamId::dice(site, structure),
            1_000,
        )
        .await
        .unwrap()
        .expect("the alerting stream has a history");
    let expected_cases = if site == "all" { 120 } else { 60 };
    assert_eq!(history.steps.len(), expected_cases);
    // A history longer than a request may replay is refused, not read whole.
    let refused = app
        .db
        .store()
        .stream_history(
            "simnet",
            "1.0",
            &segwatch::drift::incident::StreamId::dice(site, structure),
            expected_cases - 1,
        )
        .await;
    assert!(
        matches!(refused, Err(segwatch::store::StoreError::HistoryTooLong { limit }) if limit == expected_cases - 1),
        "{refused:?}"
    );

    // Every stored step is what the engine's detectors compute again from the
    // stored cases and targets: inputs, statistics, limits, alarms, designs.
    let replayed = history.replay();
    assert_eq!(replayed.len(), history.steps.len());
    for (stored, step) in history.steps.iter().zip(&replayed) {
        assert_eq!((stored.t, stored.late), (step.t, step.late));
        let recomputed: Vec<StoredUpdate> = step.updates.iter().map(StoredUpdate::from).collect();
        assert_eq!(stored.updates, recomputed, "case {}", stored.t);
        assert_eq!(
            serde_json::to_value(&*stored.parameters).unwrap(),
            serde_json::to_value(&*step.parameters).unwrap()
        );
    }

    // The replay alarms first at the case that opened the incident, with its detector.
    let (at, detectors) = first_alarm(&replayed).expect("the replay alarms");
    let opened: DateTime<Utc> = incident["observed_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(history.steps[at].observed_at, opened);
    let detector = incident["detector"].as_str().unwrap();
    assert!(
        detectors.iter().any(|d| d.as_str() == detector),
        "{detectors:?} {detector}"
    );

    // The API replays it too, for an auditor: intact, the same first alarm,
    // and the cases leading to it.
    let id = incident["id"].as_i64().unwrap();
    let (status, audit) = app
        .get(&app.admin_key, &format!("/v1/incidents/{id}/history"))
        .await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["cases"].as_u64(), Some(expected_cases as u64));
    assert_eq!(
        audit["mismatches"].as_array().map(Vec::len),
        Some(0),
        "{audit}"
    );
    assert_eq!(
        audit["first_alarm"].as_u64(),
        Some(u64::from(replayed[at].t))
    );
    let steps = audit["steps"].as_array().unwrap();
    let last = &steps[steps.len() - 1];
    assert_eq!(last["t"], audit["first_alarm"]);
    assert_eq!(
        last["result_id"].as_i64(),
        Some(history.steps[at].result_id)
    );
    app.finish().await;
}
