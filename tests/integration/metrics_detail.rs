//! `/metrics` of a network above `drift.max_detailed_streams`: its site ×
//! structure streams keep only their 7-day mean and alarms in progress, while
//! pooled (`site="all"`) and per-case mean (`structure="all"`) streams keep
//! every series.

use std::time::{Duration, Instant};

use crate::common::TestApp;
use crate::service::cubes;
use segwatch::store::Role;

/// The exposition's sample lines of one family (without `# ` lines).
pub(crate) fn samples<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// Whether a sample belongs to a site × structure stream.
fn site_structure(line: &str) -> bool {
    !line.contains(r#"site="all""#) && !line.contains(r#"structure="all""#)
}

/// Scores one case at `site` and waits for it.
async fn score(app: &TestApp, site: &str, case: &str) {
    let key = app.key(Role::Ingest, Some(site)).await;
    for (role, shift) in [("prediction", 1), ("reference", 0)] {
        let response = app.upload(&key, site, case, role, cubes(shift, 4)).await;
        assert_eq!(response.status(), 202);
    }
    assert_eq!(app.wait_scored(site, case).await["status"], "scored");
}

/// Scrapes until `wanted` appears (gauges refresh every second).
pub(crate) async fn metrics_with(app: &TestApp, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = app.metrics().await;
        if text.contains(wanted) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {wanted} in {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn above_the_detail_limit_site_structure_streams_keep_their_7_day_mean_and_alarms() {
    // Each case has two structures: one site makes 2 site × structure streams
    // (within the limit), a second site 4 (above it).
    let app = TestApp::start_with(|c| {
        c.drift.refresh_secs = 1;
        c.drift.max_detailed_streams = 2;
    })
    .await;
    // Detector states of another model version: a site × structure stream in
    // alarm and one not, a site's mean stream and a pooled stream.
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    app.db
        .execute(&format!(
            "INSERT INTO baselines (id, model, model_version, version, source, created_by, created_at)
             VALUES (1, 'x', '9', 1, 'first_cases', 'test', '{now}')"
        ))
        .await;
    app.db
        .execute(&format!(
            "INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, t, statistic,
                                         limit_value, alarm, updated_at)
             VALUES ('s', 'x', '9', 'liver', 'cusum', 1, 30, 4.5, 4.0, true, '{now}'),
                    ('s', 'x', '9', 'liver', 'pit_ewma', 1, 30, 0.45, 0.3, false, '{now}'),
                    ('s', 'x', '9', 'all', 'pit_ewma', 1, 30, 0.47, 0.3, false, '{now}'),
                    ('all', 'x', '9', 'liver', 'pit_ewma', 1, 60, 0.49, 0.3, false, '{now}')"
        ))
        .await;

    score(&app, "s", "c1").await;
    let full = metrics_with(
        &app,
        r#"segwatch_rolling_dice_1d_ratio{model="m",model_version="v1",site="s""#,
    )
    .await;
    assert!(full.contains("\nsegwatch_streams_detail_reduced 0\n"));
    for family in [
        "segwatch_rolling_dice_1d_ratio",
        "segwatch_rolling_dice_30d_ratio",
        "segwatch_rolling_cases_7d",
        "segwatch_drift_statistic",
        "segwatch_drift_limit",
        "segwatch_case_dice_ratio_count",
    ] {
        assert!(
            samples(&full, family).iter().any(|l| site_structure(l)),
            "{family} has no site x structure series in {full}"
        );
    }
    let alarm = |text: &str, detector: &str| {
        samples(text, "segwatch_drift_alarm")
            .into_iter()
            .find(|l| l.contains(&format!(r#"detector="{detector}""#)) && site_structure(l))
            .map(str::to_owned)
    };
    assert!(alarm(&full, "pit_ewma").is_some_and(|l| l.ends_with(" 0")));

    score(&app, "t", "c2").await;
    metrics_with(&app, "\nsegwatch_streams_detail_reduced 1\n").await;
    score(&app, "t", "c3").await;
    let reduced = app.metrics().await;
    for family in [
        "segwatch_rolling_dice_1d_ratio",
        "segwatch_rolling_dice_30d_ratio",
        "segwatch_rolling_cases_7d",
        "segwatch_drift_statistic",
        "segwatch_drift_limit",
    ] {
        let lines = samples(&reduced, family);
        assert!(!lines.is_empty(), "{family} left out entirely");
        assert!(
            lines.iter().all(|l| !site_structure(l)),
            "{family} keeps site x structure series: {lines:?}"
        );
    }
    // The 7-day mean of every site × structure stream of both sites stays.
    let kept = samples(&reduced, "segwatch_rolling_dice_7d_ratio");
    for site in ["s", "t"] {
        let own = format!(r#"site="{site}""#);
        let count = kept
            .iter()
            .filter(|l| l.contains(&own) && site_structure(l))
            .count();
        assert_eq!(count, 2, "{kept:?}");
    }
    // Alarms in progress stay; quiet detectors of those streams leave.
    assert!(alarm(&reduced, "cusum").is_some_and(|l| l.ends_with(" 1")));
    assert_eq!(alarm(&reduced, "pit_ewma"), None);
    // Case Dice is observed pooled: only the case scored after the switch.
    let counts = samples(&reduced, "segwatch_case_dice_ratio_count");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(
        counts
            .iter()
            .all(|l| l.contains(r#"site="all""#) && l.ends_with(" 1")),
        "{counts:?}"
    );
    app.finish().await;
}

/// Label 1 as cubes (corner, edge in voxels) in a 20 × 20 × 8 grid of 1 mm voxels.
fn lesions(cubes: &[((usize, usize, usize), usize)]) -> Vec<u8> {
    use segwatch::formats::nifti::encode;
    use segwatch::volume::{Grid, LabelVolume, Labels};
    let grid = Grid::axis_aligned([20, 20, 8], [1.0; 3], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y, z) = (i % 20, (i / 20) % 20, i / 400);
            let inside = |&((cx, cy, cz), n): &((usize, usize, usize), usize)| {
                (cx..cx + n).contains(&x) && (cy..cy + n).contains(&y) && (cz..cz + n).contains(&z)
            };
            u8::from(cubes.iter().any(inside))
        })
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

#[tokio::test]
async fn multi_instance_structures_count_lesions_by_size_and_show_them_in_the_case() {
    let app = TestApp::start().await;
    // One band edge at 0.01 mL (10 voxels of 1 mm³).
    let schema = serde_json::json!({"structures": [
        {"label": 1, "name": "mets", "instances": true, "volume_bands_ml": [0.01]}
    ]});
    assert_eq!(app.put_schema("m", "v1", &schema).await, 201);
    let key = app.key(Role::Ingest, Some("s")).await;
    // Two reference lesions, a small one (2³ = 8 voxels) and a larger one
    // (3³ = 27); the prediction finds the small one, misses the larger one and
    // invents a third.
    let reference = lesions(&[((1, 1, 1), 2), ((10, 10, 1), 3)]);
    let prediction = lesions(&[((1, 1, 1), 2), ((15, 2, 4), 3)]);
    for (role, body) in [("prediction", prediction), ("reference", reference)] {
        assert_eq!(app.upload(&key, "s", "c", role, body).await.status(), 202);
    }
    let case = app.wait_scored("s", "c").await;
    assert_eq!(case["status"], "scored");
    let text = app.metrics().await;
    let stream = r#"model="m",model_version="v1",site="s",structure="mets""#;
    for (family, band, count) in [
        ("segwatch_lesions_reference_total", "<0.01 mL", 1),
        ("segwatch_lesions_detected_total", "<0.01 mL", 1),
        ("segwatch_lesions_reference_total", "≥0.01 mL", 1),
        ("segwatch_lesions_detected_total", "≥0.01 mL", 0),
    ] {
        let line = format!("\n{family}{{band=\"{band}\",{stream}}} {count}\n");
        assert!(text.contains(&line), "{family} {band}: {text}");
    }
    let fp = format!("\nsegwatch_lesions_false_positive_total{{{stream}}} 1\n");
    assert!(text.contains(&fp), "{text}");
    // The case shows the structure lesion by lesion, as eval reports it.
    let mets = &case["lesions"][0];
    assert_eq!(mets["structure"], "mets", "{case}");
    for (field, value) in [
        ("ref_instances", 2.0),
        ("pred_instances", 2.0),
        ("tp", 1.0),
        ("fp", 1.0),
        ("fn", 1.0),
        ("sensitivity", 0.5),
    ] {
        assert_eq!(mets[field].as_f64(), Some(value), "{field}: {mets}");
    }
    let volumes: Vec<f64> = mets["lesions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["volume_ml"].as_f64().unwrap())
        .collect();
    assert_eq!(volumes, [0.008, 0.027]);
    assert_eq!(mets["lesions"][0]["dice"], 1.0);
    assert_eq!(mets["lesions"][1]["dice"], 0.0);
    app.finish().await;
}
