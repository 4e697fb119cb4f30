//! The drift feed's work for a newly deployed model version on a large
//! network: 1,000 cases of 15 structures from 20 sites over one day, fed in the
//! drift task's batches of 100 through `drift::feed::Feeder` (the task's own
//! code, without the SQL), while the rest of the network already runs
//! `--pairs` (stream, detector) pairs. Every new stream designs its detectors
//! as its case rate and the network's pair count grow, so this is the costly
//! first day of a version. Not a test: it prints each batch's time.
//!
//! `cargo run --release --example new_version_feed -- --pairs 27000 --failures 0`
//! (27,000 pairs: 200 sites × 3 models × 15 structures; `--failures` is the
//! share of baseline cases below the failure threshold, 0 for a model that
//! never fails in validation).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segwatch::drift::feed::{
    FeedSettings, Feeder, ScoredCase, StreamKey, StreamRecord, VersionContext,
};
use segwatch::drift::incident::ALL;
use segwatch::drift::{Baseline, Detector, Metric, RunLengthTarget};

const STRUCTURES: usize = 15;
const SITES: usize = 20;
const CASES: i64 = 1000;
const BATCH: usize = 100;

fn main() {
    let mut pairs = 27_000usize;
    let mut failures = 0.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value after each flag");
        match flag.as_str() {
            "--pairs" => pairs = value.parse().expect("--pairs N"),
            "--failures" => failures = value.parse().expect("--failures SHARE"),
            other => panic!("unknown flag {other}"),
        }
    }
    let mut rng = StdRng::seed_from_u64(13);
    let names: Vec<String> = (1..=STRUCTURES).map(|k| format!("s{k:02}")).collect();
    // A case's Dice: the bench's uniform 0.85–0.97, or a failure at 0.3.
    let dice = |rng: &mut StdRng| {
        if rng.random::<f64>() < failures {
            0.3
        } else {
            rng.random_range(0.85..0.97)
        }
    };
    let mut samples = BTreeMap::new();
    let mut means = vec![0.0; 200];
    for name in &names {
        let values: Vec<f64> = (0..200).map(|_| dice(&mut rng)).collect();
        for (mean, v) in means.iter_mut().zip(&values) {
            *mean += v / STRUCTURES as f64;
        }
        samples.insert((Metric::Dice, name.clone()), Baseline::new(values).unwrap());
    }
    samples.insert((Metric::Dice, ALL.into()), Baseline::new(means).unwrap());
    let context = VersionContext {
        baseline_id: 1,
        samples,
        ..VersionContext::default()
    };
    let mut contexts = BTreeMap::from([(("m".to_owned(), "new".to_owned()), context)]);
    let settings = FeedSettings {
        target: RunLengthTarget::Budget {
            false_alerts_per_month: 1.0,
        },
        incident_hold: Duration::days(3),
        default_failure_threshold: 0.5,
    };
    let start = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let cases: Vec<ScoredCase> = (0..CASES)
        .map(|n| {
            let structures: Vec<(String, f64)> =
                names.iter().map(|s| (s.clone(), dice(&mut rng))).collect();
            let mean = structures.iter().map(|(_, d)| d).sum::<f64>() / STRUCTURES as f64;
            ScoredCase {
                result_id: n,
                site: format!("site{:03}", n as usize % SITES + 1),
                model: "m".into(),
                model_version: "new".into(),
                observed_at: start + Duration::seconds(86_400 * n / CASES),
                structures,
                mean_dice: Some(mean),
                watched: Vec::new(),
            }
        })
        .collect();
    let mut feeder = Feeder::default();
    let mut streams: BTreeMap<StreamKey, StreamRecord> = BTreeMap::new();
    let all = Instant::now();
    for (k, batch) in cases.chunks(BATCH).enumerate() {
        let started = Instant::now();
        let active = pairs + streams.values().map(|r| r.pairs).sum::<usize>();
        let updates = feeder.feed(&settings, batch, &mut streams, &mut contexts, active);
        let cusum = updates
            .iter()
            .filter(|u| u.updates.iter().any(|s| s.detector == Detector::Cusum))
            .count();
        println!(
            "batch {k}: {:.2} s, {} stream updates ({cusum} with a CUSUM)",
            started.elapsed().as_secs_f64(),
            updates.len()
        );
    }
    println!("{CASES} cases fed in {:.1} s", all.elapsed().as_secs_f64());
}
