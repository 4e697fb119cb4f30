//! Detector behaviour on synthetic streams, through the step the service runs
//! (`StreamState::feed`), against the alert planner's figures: false-alarm
//! rates the planner predicts are what simulated streams raise, and the
//! deployment `segwatch simulate` builds detects drops as fast as promised.

use chrono::{DateTime, Duration, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use segwatch::drift::plan::{Change, DiceModel, Fleet, detection_delays, false_alarm_rate};
use segwatch::drift::{
    Baseline, Design, Detector, Observation, RunLengthTarget, StreamProfile, StreamState,
};

/// A stream model with failures, so the CUSUM has something to count.
const MODEL: DiceModel = DiceModel {
    mean: 0.90,
    sd: 0.04,
    failure_rate: 0.03,
};

fn fleet(target: RunLengthTarget) -> Fleet {
    Fleet {
        sites: 3,
        structures: 5,
        watched: Default::default(),
        cases_per_day: 8.0,
        baseline_cases: 200,
        target,
        failure_rate: MODEL.failure_rate,
        failure_threshold: 0.5,
    }
}

#[test]
fn planned_false_alarm_rates_match_simulated_streams() {
    // A short target run length, so a few hundred streams raise enough false
    // alarms to count; each detector restarts after its alarm, as the planner's
    // run lengths assume.
    let target = 400.0;
    let plan = fleet(RunLengthTarget::Arl0 { cases: target });
    let profile = StreamProfile {
        structure_is_mean: false,
        failure_threshold: 0.5,
        cases_per_day: 8.0,
    };
    let (streams, cases) = (400u64, 2000u32);
    let mut alarms = [0u64; 3];
    for s in 0..streams {
        let mut rng = StdRng::seed_from_u64(9_000 + s);
        let baseline = Baseline::new((0..200).map(|_| MODEL.sample(&mut rng)).collect()).unwrap();
        let designs: Vec<Design> = Detector::ALL
            .into_iter()
            .filter_map(|d| Design::new(d, &baseline, &profile, target))
            .collect();
        assert_eq!(designs.len(), 3);
        let mut state = StreamState::default();
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        for i in 0..cases {
            let case = Observation {
                dice: MODEL.sample(&mut rng),
                at: start + Duration::hours(3 * i as i64),
            };
            for update in state.feed(&designs, &baseline, case) {
                if update.alarm {
                    alarms[Detector::ALL
                        .iter()
                        .position(|d| *d == update.detector)
                        .unwrap()] += 1;
                    state.detectors.remove(&update.detector);
                }
            }
        }
    }
    let total = (streams * cases as u64) as f64;
    for (k, detector) in Detector::ALL.into_iter().enumerate() {
        let planned = total * false_alarm_rate(detector, &plan, target);
        let seen = alarms[k] as f64;
        eprintln!("{detector:?}: planned {planned:.0}, simulated {seen}");
        match detector {
            // The guard rail's plan is an upper bound.
            Detector::GuardRail => assert!(seen <= planned, "{detector:?}: {seen} > {planned:.0}"),
            // Baselines vary a lot in their run length: the tolerance covers
            // 400 baselines' sampling spread and the warm-up.
            _ => assert!(
                seen > 0.7 * planned && seen < 1.3 * planned,
                "{detector:?}: simulated {seen}, planned {planned:.0}"
            ),
        }
    }
}

fn drop(mean: f64, sd: f64, by: f64) -> Change {
    let before = DiceModel {
        mean,
        sd,
        failure_rate: 0.0,
    };
    Change {
        before,
        after: DiceModel {
            mean: mean - by,
            ..before
        },
    }
}

#[test]
fn the_simulated_deployment_sees_dice_drops_within_days() {
    // `segwatch simulate`'s default deployment: 3 sites × 5 structures × 8 cases
    // a day, a baseline of 200 cases, the default budget of 1 false alert a month.
    let fleet = fleet(RunLengthTarget::Budget {
        false_alerts_per_month: 1.0,
    });
    let liver = detection_delays(&fleet, &drop(0.95, 0.02, 0.05), 200, 10.0, 1);
    eprintln!("liver-like −0.05: {liver:?}");
    assert!(liver.median_cases.unwrap() <= 10.0 && liver.p90_cases.unwrap() <= 20.0);
    let pancreas = detection_delays(&fleet, &drop(0.80, 0.07, 0.05), 200, 10.0, 2);
    eprintln!("pancreas-like −0.05: {pancreas:?}");
    // 90 % within 10 days is the target; these 200 streams give 90.5 % and the
    // planner's 400 others 89 % (docs/drift.md), so the bound leaves room for
    // that spread.
    assert!(pancreas.median_cases.unwrap() <= 50.0 && pancreas.detected_within_10_days >= 0.85);
    // A failure rate rising from 3 % to 10 % needs more cases: the information
    // a case carries about it (0.053 nats) bounds any detector's delay.
    let failures = Change {
        before: MODEL,
        after: DiceModel {
            failure_rate: 0.10,
            ..MODEL
        },
    };
    let rise = detection_delays(&fleet, &failures, 200, 60.0, 3);
    eprintln!("failure rate 3 % → 10 %: {rise:?}");
    assert!(rise.median_cases.unwrap() <= 200.0 && rise.detected >= 0.75);
}
