//! Long fleet simulations through the service's own drift feed
//! (`drift::feed::Feeder`, the code the drift task runs, without the SQL):
//! every site's cases in case-time order, fixed seeds, and incidents counted.
//! Not a test: it prints.
//!
//! `cargo run --release --example fleet_simulation -- --sites 20 --structures 10
//! --cases-per-day 50 --days 30 --seeds 20` prints the incidents of each seed
//! and their mean and spread; `--drift day20:site3:s0:0.10` injects a drop of
//! structure s0 at site 3 from day 20 (structures are s0, s1, … with the spreads
//! of `segwatch simulate`'s liver, spleen, kidneys and pancreas in turn).
//! `DEBUG_INCIDENTS=1` also lists every incident on stderr.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segwatch::drift::Baseline;
use segwatch::drift::feed::{FeedSettings, Feeder, ScoredCase, VersionContext};
use segwatch::drift::incident::ALL;
use segwatch::drift::plan::DiceModel;
use segwatch::drift::{RECOMMENDED_BASELINE, RunLengthTarget};

/// (mean, sd) of `segwatch simulate`'s structures; failures 2 %.
const SPREADS: [(f64, f64); 5] = [
    (0.95, 0.02),
    (0.92, 0.035),
    (0.91, 0.04),
    (0.91, 0.04),
    (0.80, 0.07),
];
const FAILURE_RATE: f64 = 0.02;

struct Args {
    sites: u32,
    structures: usize,
    cases_per_day: u32,
    days: u32,
    seeds: u64,
    budget: f64,
    drift: Option<(u32, u32, usize, f64)>,
}

fn parse() -> Args {
    let mut args = Args {
        sites: 3,
        structures: 5,
        cases_per_day: 8,
        days: 30,
        seeds: 20,
        budget: 1.0,
        drift: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--sites" => args.sites = value.parse().expect("--sites N"),
            "--structures" => args.structures = value.parse().expect("--structures N"),
            "--cases-per-day" => args.cases_per_day = value.parse().expect("--cases-per-day N"),
            "--days" => args.days = value.parse().expect("--days N"),
            "--seeds" => args.seeds = value.parse().expect("--seeds N"),
            "--false-alerts-per-month" => {
                args.budget = value.parse().expect("--false-alerts-per-month X")
            }
            "--drift" => {
                let p: Vec<&str> = value.split(':').collect();
                args.drift = Some((
                    p[0].trim_start_matches("day").parse().expect("dayN"),
                    p[1].trim_start_matches("site").parse().expect("siteN"),
                    p[2].trim_start_matches('s').parse().expect("sN"),
                    p[3].parse().expect("delta"),
                ));
            }
            other => panic!("unknown option {other}"),
        }
    }
    args
}

fn model(structure: usize, drop: f64) -> DiceModel {
    let (mean, sd) = SPREADS[structure % SPREADS.len()];
    DiceModel {
        mean: mean - drop,
        sd,
        failure_rate: FAILURE_RATE,
    }
}

/// Incidents of one simulated deployment.
struct Outcome {
    incidents: usize,
    by_detector: BTreeMap<&'static str, usize>,
    /// Days from the drift to the first incident related to it.
    first_related: Option<f64>,
    /// Incidents related to the drift opened after it, and the others.
    related: usize,
    unrelated: usize,
}

fn run(args: &Args, seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<String> = (0..args.structures).map(|s| format!("s{s}")).collect();
    // The acceptance baseline: RECOMMENDED_BASELINE validation cases.
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..RECOMMENDED_BASELINE {
        let dice: Vec<f64> = (0..args.structures)
            .map(|s| model(s, 0.0).sample(&mut rng))
            .collect();
        for (name, d) in names.iter().zip(&dice) {
            samples.entry(name.clone()).or_default().push(*d);
        }
        samples
            .entry(ALL.into())
            .or_default()
            .push(dice.iter().sum::<f64>() / dice.len() as f64);
    }
    let context = VersionContext {
        baseline_id: 1,
        samples: samples
            .into_iter()
            .map(|(k, v)| {
                let sample = Baseline::new(v).expect("valid baseline");
                ((segwatch::drift::Metric::Dice, k), sample)
            })
            .collect(),
        ..VersionContext::default()
    };
    let version = ("m".to_owned(), "1".to_owned());
    let mut contexts = BTreeMap::from([(version.clone(), context)]);
    let mut streams = BTreeMap::new();
    let mut feeder = Feeder::default();
    let settings = FeedSettings {
        target: RunLengthTarget::Budget {
            false_alerts_per_month: args.budget,
        },
        incident_hold: Duration::days(3),
        default_failure_threshold: 0.5,
    };
    let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("valid time");
    let mut id = 0;
    let mut active_pairs = 0;
    for day in 0..args.days {
        let mut cases = Vec::new();
        for slot in 0..args.cases_per_day {
            for site in 1..=args.sites {
                let minutes =
                    (slot as i64 * 24 * 60) / args.cases_per_day as i64 + rng.random_range(0..30);
                let dice: Vec<f64> = (0..args.structures)
                    .map(|s| {
                        let drop = match args.drift {
                            Some((d, k, st, delta)) if day >= d && site == k && s == st => delta,
                            _ => 0.0,
                        };
                        model(s, drop).sample(&mut rng)
                    })
                    .collect();
                id += 1;
                cases.push(ScoredCase {
                    result_id: id,
                    site: format!("site{site}"),
                    model: version.0.clone(),
                    model_version: version.1.clone(),
                    observed_at: start + Duration::days(day as i64) + Duration::minutes(minutes),
                    mean_dice: Some(dice.iter().sum::<f64>() / dice.len() as f64),
                    structures: names.iter().cloned().zip(dice).collect(),
                    watched: Vec::new(),
                });
            }
        }
        cases.sort_by_key(|c| (c.observed_at, c.result_id));
        feeder.feed(&settings, &cases, &mut streams, &mut contexts, active_pairs);
        active_pairs = streams.values().map(|r| r.pairs).sum();
    }
    let context = &contexts[&version];
    let incidents: Vec<_> = context
        .incidents
        .open
        .iter()
        .chain(context.closed.iter().map(|(i, _)| i))
        .collect();
    let mut by_detector = BTreeMap::new();
    for i in &incidents {
        if std::env::var("DEBUG_INCIDENTS").is_ok() {
            eprintln!(
                "{:?} {} {} stat {:.4} limit {:.4} day {:.1}",
                i.detector,
                i.stream.site,
                i.stream.structure,
                i.statistic,
                i.limit,
                (i.observed_at - start).num_seconds() as f64 / 86400.0
            );
        }
        *by_detector.entry(i.detector.as_str()).or_insert(0) += 1;
    }
    let (mut first_related, mut related, mut unrelated) = (None::<f64>, 0, 0);
    if let Some((day, site, structure, _)) = args.drift {
        let drifted = segwatch::drift::incident::StreamId {
            site: format!("site{site}"),
            structure: format!("s{structure}"),
            metric: segwatch::drift::Metric::Dice,
        };
        for i in &incidents {
            let days = (i.observed_at - start).num_seconds() as f64 / 86_400.0 - day as f64;
            if i.stream.related(&drifted) && days >= 0.0 {
                first_related = Some(first_related.map_or(days, |f| f.min(days)));
                related += 1;
            } else {
                unrelated += 1;
            }
        }
    }
    Outcome {
        incidents: incidents.len(),
        by_detector,
        first_related,
        related,
        unrelated,
    }
}

fn main() {
    let args = parse();
    let mut counts = Vec::new();
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    let mut delays = Vec::new();
    let (mut related_total, mut unrelated_total) = (0, 0);
    for seed in 1..=args.seeds {
        let outcome = run(&args, seed);
        let (n, delay, unrelated) = (outcome.incidents, outcome.first_related, outcome.unrelated);
        related_total += outcome.related;
        for (d, c) in outcome.by_detector {
            *totals.entry(d).or_insert(0) += c;
        }
        counts.push(n as f64);
        unrelated_total += unrelated;
        if let Some(d) = delay {
            delays.push(d);
        }
        if args.drift.is_some() {
            println!(
                "seed {seed}: {n} incidents; related incident after {delay:?} days; {unrelated} unrelated"
            );
        } else {
            println!("seed {seed}: {n} incidents");
        }
    }
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    let sd = (counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>()
        / (counts.len() as f64 - 1.0).max(1.0))
    .sqrt();
    let zero = counts.iter().filter(|&&c| c == 0.0).count();
    let months = args.days as f64 / segwatch::drift::limits::DAYS_PER_MONTH;
    println!(
        "{} seeds of {} sites × {} structures × {} cases/day × {} days: incidents per run mean {mean:.3} (sd {sd:.3}, \
         standard error {:.3}), {zero} runs with none; {:.3} a month; by detector {totals:?}",
        counts.len(),
        args.sites,
        args.structures,
        args.cases_per_day,
        args.days,
        sd / (counts.len() as f64).sqrt(),
        mean / months,
    );
    if args.drift.is_some() {
        delays.sort_by(f64::total_cmp);
        println!(
            "drift detected in {} of {} runs; days to the first related incident: median {:?}, max {:?}; \
             incidents related to the drift {related_total} ({:.2} per run); unrelated incidents {unrelated_total}",
            delays.len(),
            counts.len(),
            delays.get(delays.len() / 2),
            delays.last(),
            related_total as f64 / counts.len() as f64
        );
    }
}
