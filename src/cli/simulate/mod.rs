//! `segwatch simulate`: realistic cases uploaded through the API with simulated
//! case times, so dashboards and alerts can be seen working.
//!
//! Each case is an abdomen-like label map (liver, spleen, kidneys, pancreas as
//! jittered ellipsoids); the prediction is the reference with a one-sided boundary
//! error sized to hit a Dice drawn from the structure's distribution (like a real
//! model's spread), with occasional failures, and lower after an injected drift.
//! Optionally, small liver lesions as a multi-instance structure (`lesions`)
//! and predictions sent with their probabilities (`probabilities`).

mod lesions;
mod probabilities;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde_json::{Value, json};

use crate::formats::nifti::encode;
use crate::http::form_body;
use crate::volume::{Grid, LabelVolume, Labels};

/// A drift to inject: from day `day` on, site `site`'s `structure` loses `delta` Dice.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSpec {
    pub day: u32,
    pub site: u32,
    pub structure: String,
    pub delta: f64,
}

impl FromStr for DriftSpec {
    type Err = String;

    /// `dayX:siteK:STRUCTURE:DELTA`, e.g. `day5:site2:liver:0.08`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad =
            || format!("{s}: expected dayX:siteK:STRUCTURE:DELTA, e.g. day5:site2:liver:0.08");
        if parts.len() != 4 {
            return Err(bad());
        }
        let day = parts[0]
            .strip_prefix("day")
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        let site = parts[1]
            .strip_prefix("site")
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        let delta: f64 = parts[3].parse().map_err(|_| bad())?;
        if !(0.0..1.0).contains(&delta) || !STRUCTURES.iter().any(|s| s.name == parts[2]) {
            return Err(format!(
                "{}: structure must be one of {:?} and DELTA in 0..1",
                s,
                STRUCTURES.map(|s| s.name)
            ));
        }
        Ok(DriftSpec {
            day,
            site,
            structure: parts[2].into(),
            delta,
        })
    }
}

/// How a shadow version differs from the live one, or a second reader from
/// the first: `structure` loses `delta` Dice.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowShift {
    pub structure: String,
    pub delta: f64,
}

impl FromStr for ShadowShift {
    type Err = String;

    /// `STRUCTURE:DELTA`, e.g. `spleen:0.03`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s}: expected STRUCTURE:DELTA with STRUCTURE one of {:?} and DELTA in 0..1, e.g. spleen:0.03",
                STRUCTURES.map(|o| o.name)
            )
        };
        let (structure, delta) = s.split_once(':').ok_or_else(bad)?;
        let delta: f64 = delta.parse().map_err(|_| bad())?;
        if !(0.0..1.0).contains(&delta) || !STRUCTURES.iter().any(|o| o.name == structure) {
            return Err(bad());
        }
        Ok(ShadowShift {
            structure: structure.into(),
            delta,
        })
    }
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// segwatch base URL, such as http://127.0.0.1:8080.
    #[arg(long)]
    pub(super) url: String,
    /// Admin key (simulated case times need one).
    #[arg(long, env = "SEGWATCH_KEY", hide_env_values = true)]
    pub(super) key: String,
    /// Sites, named site1, site2, ...
    #[arg(long, default_value_t = 3)]
    pub(super) sites: u32,
    /// Days of case time, ending now.
    #[arg(long, default_value_t = 14)]
    pub(super) days: u32,
    /// Cases a day at each site.
    #[arg(long, default_value_t = 8)]
    pub(super) cases_per_day: u32,
    /// Injected drift, repeatable: dayX:siteK:STRUCTURE:DELTA (from day X on,
    /// site K's STRUCTURE loses DELTA Dice).
    #[arg(long = "drift-at")]
    pub(super) drift_at: Vec<DriftSpec>,
    /// Random seed: the same seed uploads the same cases.
    #[arg(long, default_value_t = 1)]
    pub(super) seed: u64,
    /// Model name the predictions are uploaded under.
    #[arg(long, default_value = "simnet")]
    pub(super) model: String,
    /// Model version the predictions are uploaded under.
    #[arg(long, default_value = "1.0")]
    pub(super) model_version: String,
    /// Uploads in flight.
    #[arg(long, default_value_t = 4)]
    pub(super) concurrency: usize,
    /// A second version of the model in shadow mode: it predicts every case
    /// too, as the live version does unless `--shadow-worse` says otherwise.
    #[arg(long)]
    pub(super) shadow_version: Option<String>,
    /// Where the shadow version is worse, repeatable: STRUCTURE:DELTA (its Dice
    /// of STRUCTURE is DELTA lower than the live version's in every case).
    #[arg(long = "shadow-worse", requires = "shadow_version")]
    pub(super) shadow_worse: Vec<ShadowShift>,
    /// A second reader (`r2`) uploads a reference of every case too, after
    /// the first (the `default` reader), drawing what the first does unless
    /// `--reader-disagrees` says otherwise.
    #[arg(long)]
    pub(super) second_reader: bool,
    /// Where the second reader disagrees with the first, repeatable:
    /// STRUCTURE:DELTA (its Dice of STRUCTURE against the first reader is
    /// 1 − DELTA in every case).
    #[arg(long = "reader-disagrees", requires = "second_reader")]
    pub(super) reader_disagrees: Vec<ShadowShift>,
    /// A sixth structure, `liver_lesion` (label 6, multi-instance in the
    /// schema and in the baseline), in this share of the cases (0.05 to 1): 1 to 4
    /// small lesions in the liver, each found, partly found or missed by the
    /// prediction, now and then beside a false-positive lesion. The schema
    /// watches its lesion sensitivity for drift, and the baseline samples it.
    #[arg(long, value_parser = share)]
    pub(super) lesions: Option<f64>,
    /// A site whose predictions are sent with their probabilities, repeatable:
    /// siteK (a float NIfTI, one channel per structure, as multipart/form-data),
    /// so its structures get soft Dice, Brier and ECE.
    #[arg(long = "probabilities-at", value_parser = site_number)]
    pub(super) probabilities_at: Vec<u32>,
}

/// A share from 0.05 to 1 (the baseline takes validation cases until 100
/// have lesions).
fn share(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| (0.05..=1.0).contains(v))
        .ok_or_else(|| format!("{s}: expected a share from 0.05 to 1, e.g. 0.25"))
}

/// `siteK` as K.
fn site_number(s: &str) -> Result<u32, String> {
    s.strip_prefix("site")
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| format!("{s}: expected siteK, e.g. site3"))
}

/// The boundary of a multipart prediction (absent from any gzip NIfTI in practice).
const BOUNDARY: &str = "segwatch-simulate-0b5f83c2e9d14a67";

/// A simulated structure: label, name, ellipsoid radii (voxels) and centre, and
/// the model's Dice distribution.
#[derive(Debug, Clone, Copy)]
struct Organ {
    label: u8,
    name: &'static str,
    radii: [f64; 3],
    centre: [f64; 3],
    dice_mean: f64,
    dice_sd: f64,
}

const SHAPE: [usize; 3] = [72, 64, 40];
const SPACING: [f64; 3] = [1.5, 1.5, 3.0];
/// Chance that a structure fails outright in a case.
const FAILURE_RATE: f64 = 0.02;
const STRUCTURES: [Organ; 5] = [
    Organ {
        label: 1,
        name: "liver",
        radii: [17.0, 14.0, 9.0],
        centre: [24.0, 30.0, 20.0],
        dice_mean: 0.95,
        dice_sd: 0.02,
    },
    Organ {
        label: 2,
        name: "spleen",
        radii: [7.0, 9.0, 6.0],
        centre: [52.0, 22.0, 21.0],
        dice_mean: 0.92,
        dice_sd: 0.035,
    },
    Organ {
        label: 3,
        name: "kidney_right",
        radii: [5.0, 6.0, 6.0],
        centre: [22.0, 48.0, 17.0],
        dice_mean: 0.91,
        dice_sd: 0.04,
    },
    Organ {
        label: 4,
        name: "kidney_left",
        radii: [5.0, 6.0, 6.0],
        centre: [50.0, 48.0, 17.0],
        dice_mean: 0.91,
        dice_sd: 0.04,
    },
    Organ {
        label: 5,
        name: "pancreas",
        radii: [11.0, 3.0, 3.0],
        centre: [40.0, 40.0, 25.0],
        dice_mean: 0.80,
        dice_sd: 0.07,
    },
];
const SCANNERS: [(&str, &str); 4] = [
    ("Siemens", "SOMATOM Force"),
    ("GE", "Revolution CT"),
    ("Philips", "IQon"),
    ("Canon", "Aquilion ONE"),
];

/// A Dice drawn from the structure's distribution (mean lowered by `drift`),
/// or a failure.
fn draw_dice(rng: &mut StdRng, organ: &Organ, drift: f64) -> f64 {
    if rng.random::<f64>() < FAILURE_RATE {
        return rng.random_range(0.05..0.45);
    }
    let mean = (organ.dice_mean - drift).clamp(0.05, 0.99);
    let common = mean * (1.0 - mean) / (organ.dice_sd * organ.dice_sd) - 1.0;
    Beta::new(mean * common, (1.0 - mean) * common).map_or(mean, |b| b.sample(rng))
}

fn index(p: [usize; 3]) -> usize {
    p[0] + SHAPE[0] * (p[1] + SHAPE[1] * p[2])
}

fn coords(i: usize) -> [usize; 3] {
    [
        i % SHAPE[0],
        (i / SHAPE[0]) % SHAPE[1],
        i / (SHAPE[0] * SHAPE[1]),
    ]
}

/// The indices of the (up to 6) face neighbours of voxel `i`.
fn neighbours(i: usize) -> impl Iterator<Item = usize> {
    let c = coords(i);
    (0..3).flat_map(move |a| {
        [-1i64, 1].into_iter().filter_map(move |d| {
            let v = c[a] as i64 + d;
            (0..SHAPE[a] as i64).contains(&v).then(|| {
                let mut n = c;
                n[a] = v as usize;
                index(n)
            })
        })
    })
}

/// Each voxel's position along a random direction: sorting by it cuts a
/// structure from one side.
fn random_projection(rng: &mut StdRng) -> impl Fn(usize) -> f64 {
    let direction: [f64; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
    move |i| {
        let c = coords(i);
        (0..3).map(|a| c[a] as f64 * direction[a]).sum()
    }
}

/// A reference label map: the organs as ellipsoids jittered in size and place.
fn reference(rng: &mut StdRng) -> Vec<u8> {
    let mut labels = vec![0u8; SHAPE.iter().product()];
    for organ in &STRUCTURES {
        let scale: [f64; 3] = std::array::from_fn(|_| rng.random_range(0.85..1.15));
        let shift: [f64; 3] = std::array::from_fn(|_| rng.random_range(-2.0..2.0));
        for z in 0..SHAPE[2] {
            for y in 0..SHAPE[1] {
                for x in 0..SHAPE[0] {
                    let p = [x as f64, y as f64, z as f64];
                    let d: f64 = (0..3)
                        .map(|a| {
                            ((p[a] - organ.centre[a] - shift[a]) / (organ.radii[a] * scale[a]))
                                .powi(2)
                        })
                        .sum();
                    if d <= 1.0 && labels[index([x, y, z])] == 0 {
                        labels[index([x, y, z])] = organ.label;
                    }
                }
            }
        }
    }
    labels
}

/// The prediction: for each organ, the `1 − dice` share of its voxels on one side
/// (along a random direction) is moved to the background ring on the other side,
/// which gives Dice ≈ the drawn value.
fn prediction(rng: &mut StdRng, reference: &[u8], dice: &[f64]) -> Vec<u8> {
    let mut labels = reference.to_vec();
    for (organ, &target) in STRUCTURES.iter().zip(dice) {
        let voxels: Vec<usize> = (0..reference.len())
            .filter(|&i| reference[i] == organ.label)
            .collect();
        let moved = ((1.0 - target) * voxels.len() as f64).round() as usize;
        if voxels.is_empty() || moved == 0 {
            continue;
        }
        let along = random_projection(rng);
        let mut sorted = voxels.clone();
        sorted.sort_by(|&a, &b| along(b).total_cmp(&along(a)));
        for &i in sorted.iter().take(moved) {
            labels[i] = 0;
        }
        // Grow on the other side, ring by ring, into the background.
        let mut added = 0;
        let mut frontier = voxels;
        while added < moved && !frontier.is_empty() {
            let mut ring: Vec<usize> = Vec::new();
            for &i in &frontier {
                ring.extend(neighbours(i).filter(|&j| labels[j] == 0 && reference[j] == 0));
            }
            ring.sort_unstable();
            ring.dedup();
            ring.sort_by(|&a, &b| along(a).total_cmp(&along(b)));
            for &j in ring.iter().take(moved - added) {
                labels[j] = organ.label;
                added += 1;
            }
            frontier = ring;
        }
    }
    labels
}

/// The shadow version's prediction: the live one's, except that each shifted
/// structure is predicted afresh at its live Dice less the shift (over voxels
/// the live prediction leaves to the background or to that structure, so the
/// other structures keep exactly the live version's voxels and Dice).
fn shadow_prediction(
    rng: &mut StdRng,
    reference: &[u8],
    live: &[u8],
    dice: &[f64],
    worse: &[ShadowShift],
) -> Vec<u8> {
    let shifted: Vec<u8> = STRUCTURES
        .iter()
        .filter(|o| worse.iter().any(|w| w.structure == o.name))
        .map(|o| o.label)
        .collect();
    let mut labels = live.to_vec();
    if shifted.is_empty() {
        return labels;
    }
    let targets: Vec<f64> = STRUCTURES
        .iter()
        .zip(dice)
        .map(|(o, &d)| {
            let delta: f64 = worse
                .iter()
                .filter(|w| w.structure == o.name)
                .map(|w| w.delta)
                .sum();
            (d - delta).max(0.0)
        })
        .collect();
    let fresh = prediction(rng, reference, &targets);
    for (label, new) in labels.iter_mut().zip(&fresh) {
        if shifted.contains(label) {
            *label = 0;
        }
        if *label == 0 && shifted.contains(new) {
            *label = *new;
        }
    }
    labels
}

fn grid() -> Grid {
    Grid::axis_aligned(SHAPE, SPACING, 3)
}

fn nifti(labels: Vec<u8>) -> Vec<u8> {
    encode(
        &LabelVolume::new(grid(), Labels::U8(labels)).expect("shape matches"),
        true,
    )
}

/// Whether the next case has lesions, drawn with the lesions' generator.
fn has_lesions(rng: &mut StdRng, share: Option<f64>) -> bool {
    share.is_some_and(|share| rng.random::<f64>() < share)
}

/// The lesion Dice and detection sensitivity of a validation case of the
/// in-control model: None for a case without lesions (empty on both sides, so
/// no Dice).
fn baseline_lesions(rng: &mut StdRng, share: Option<f64>) -> Option<(f64, Option<f64>)> {
    has_lesions(rng, share).then(|| {
        let mut labels = reference(rng);
        let found = lesions::add_to_reference(rng, &mut labels);
        let mut prediction = labels.clone();
        lesions::add_to_prediction(rng, &labels, &mut prediction, &found);
        (
            lesions::dice(&prediction, &labels),
            lesions::sensitivity(&prediction, &labels),
        )
    })
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.sites == 0 || args.days == 0 || args.cases_per_day == 0 {
        bail!("--sites, --days and --cases-per-day must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    runtime.block_on(simulate(args))?;
    eprintln!(
        "segwatch: scoring runs on; then see the worst cases at {base}/v1/sites/site1/cases?order=dice, \
         drift incidents at {base}/v1/incidents?state=all, and the series at {base}/metrics"
    );
    Ok(())
}

async fn send(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let response = request
        .send()
        .await
        .with_context(|| format!("{what}: segwatch unreachable"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    Ok(body)
}

/// Uploads the simulated fleet; returns how many cases.
pub(super) async fn simulate(args: SimulateArgs) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let models = format!(
        "{base}/v1/models/{}/versions/{}",
        args.model, args.model_version
    );
    let mut structures: Vec<Value> = STRUCTURES
        .iter()
        .map(|o| json!({"label": o.label, "name": o.name, "tolerance_mm": 2.0}))
        .collect();
    if args.lesions.is_some() {
        // Its lesion sensitivity gets drift streams besides its Dice.
        structures.push(
            json!({"label": lesions::LABEL, "name": lesions::NAME, "tolerance_mm": 2.0,
            "instances": true, "drift_metrics": ["lesion_sensitivity"]}),
        );
    }
    let schema = json!({"structures": structures, "unknown_labels": "reject"});
    // The probability channels follow the schema's order.
    let channel_labels: Vec<u8> = STRUCTURES
        .iter()
        .map(|o| o.label)
        .chain(args.lesions.map(|_| lesions::LABEL))
        .collect();
    for version in std::iter::once(&args.model_version).chain(&args.shadow_version) {
        send(
            client
                .put(format!(
                    "{base}/v1/models/{}/versions/{version}/structures",
                    args.model
                ))
                .bearer_auth(&args.key)
                .json(&schema),
            "setting the schema",
        )
        .await?;
    }

    // The model's acceptance baseline: 200 validation cases from the in-control model.
    // Lesions come from generators of their own, so the organs' fleet is the
    // same with or without them.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut lesion_rng = StdRng::seed_from_u64(args.seed ^ 0x1e51_0000_0000_0000);
    // With lesions in a share of the cases, validation cases go on (their
    // organs from a generator of their own) until 100 have lesions, the least
    // a baseline takes per structure.
    let mut extra_rng = StdRng::seed_from_u64(args.seed ^ 0xba5e_0000_0000_0000);
    let (mut cases, mut sensitivities) = (Vec::new(), Vec::new());
    while cases.len() < 200 || (args.lesions.is_some() && sensitivities.len() < 100) {
        let organs = if cases.len() < 200 {
            &mut rng
        } else {
            &mut extra_rng
        };
        let mut case: serde_json::Map<String, Value> = STRUCTURES
            .iter()
            .map(|o| (o.name.to_owned(), json!(draw_dice(organs, o, 0.0))))
            .collect();
        if let Some((dice, sensitivity)) = baseline_lesions(&mut lesion_rng, args.lesions) {
            case.insert(lesions::NAME.into(), json!(dice));
            sensitivities.extend(sensitivity);
        }
        cases.push(Value::Object(case));
    }
    let mut baseline = json!({"source": "simulated validation set", "cases": cases});
    if args.lesions.is_some() {
        baseline["metrics"] = json!({"lesion_sensitivity": {lesions::NAME: sensitivities}});
    }
    send(
        client
            .put(format!("{models}/baseline"))
            .bearer_auth(&args.key)
            .json(&baseline),
        "setting the baseline",
    )
    .await?;

    // The shadow version draws from its own generator, so the live fleet is
    // the same with or without it.
    let mut shadow_rng = StdRng::seed_from_u64(args.seed ^ 0x5ead_0000_0000_0000);
    let mut reader_rng = StdRng::seed_from_u64(args.seed ^ 0x2ead_0000_0000_0000);
    let start = Utc::now() - chrono::Duration::days(args.days as i64);
    let per_day = args.cases_per_day as i64;
    let mut jobs = Vec::new();
    for day in 0..args.days {
        for slot in 0..args.cases_per_day {
            for site in 1..=args.sites {
                let minutes = (slot as i64 * 24 * 60) / per_day + rng.random_range(0..30);
                let observed =
                    start + chrono::Duration::days(day as i64) + chrono::Duration::minutes(minutes);
                let dice: Vec<f64> = STRUCTURES
                    .iter()
                    .map(|o| {
                        let drift: f64 = args
                            .drift_at
                            .iter()
                            .filter(|d| d.site == site && d.structure == o.name && day >= d.day)
                            .map(|d| d.delta)
                            .sum();
                        draw_dice(&mut rng, o, drift)
                    })
                    .collect();
                let mut reference = reference(&mut rng);
                let lesioned = has_lesions(&mut lesion_rng, args.lesions);
                let found = match lesioned {
                    true => lesions::add_to_reference(&mut lesion_rng, &mut reference),
                    false => Vec::new(),
                };
                let mut prediction = prediction(&mut rng, &reference, &dice);
                if lesioned {
                    lesions::add_to_prediction(
                        &mut lesion_rng,
                        &reference,
                        &mut prediction,
                        &found,
                    );
                }
                let probabilities = args
                    .probabilities_at
                    .contains(&site)
                    .then(|| probabilities::file(&grid(), &prediction, &channel_labels));
                let shadow = args.shadow_version.as_ref().map(|_| {
                    nifti(shadow_prediction(
                        &mut shadow_rng,
                        &reference,
                        &prediction,
                        &dice,
                        &args.shadow_worse,
                    ))
                });
                // The second reader: the first's voxels, each disagreeing
                // structure drawn afresh at Dice 1 − DELTA against them.
                let second = args.second_reader.then(|| {
                    nifti(shadow_prediction(
                        &mut reader_rng,
                        &reference,
                        &reference,
                        &[1.0; STRUCTURES.len()],
                        &args.reader_disagrees,
                    ))
                });
                let (manufacturer, scanner) = SCANNERS[rng.random_range(0..SCANNERS.len())];
                let thickness = [1.0, 1.25, 2.5, 5.0][rng.random_range(0..4)];
                let acquisition = format!(
                    "scanner_manufacturer={manufacturer}&scanner_model={}&slice_thickness_mm={thickness}&protocol=abdomen_portal_venous",
                    scanner.replace(' ', "%20")
                );
                let case = format!("sim-{}-d{day:03}-{slot:02}", args.seed);
                jobs.push((
                    format!("site{site}"),
                    case,
                    observed,
                    acquisition,
                    nifti(prediction),
                    probabilities,
                    shadow,
                    nifti(reference),
                    second,
                ));
            }
        }
    }
    let total = jobs.len();
    eprintln!(
        "segwatch: uploading {total} simulated cases over {} days at {} sites",
        args.days, args.sites
    );
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut handles = Vec::new();
    for (site, case, observed, acquisition, prediction, probabilities, shadow, reference, second) in
        jobs
    {
        let permit = semaphore.clone().acquire_owned().await?;
        let (client, base, key) = (client.clone(), base.clone(), args.key.clone());
        let (model, version) = (args.model.clone(), args.model_version.clone());
        let shadow = shadow.zip(args.shadow_version.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let at = observed.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let url = format!("{base}/v1/sites/{site}/cases/{case}");
            let query =
                format!("model={model}&model_version={version}&observed_at={at}&{acquisition}");
            let request = client
                .put(format!("{url}/prediction?{query}"))
                .bearer_auth(&key);
            let request = match probabilities {
                Some(probabilities) => request
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        format!("multipart/form-data; boundary={BOUNDARY}"),
                    )
                    .body(form_body(&prediction, &probabilities, BOUNDARY)),
                None => request.body(prediction),
            };
            send(request, "uploading a prediction").await?;
            if let Some((body, shadow_version)) = shadow {
                let query = format!(
                    "model={model}&model_version={shadow_version}&observed_at={at}&{acquisition}"
                );
                send(
                    client
                        .put(format!("{url}/prediction?{query}"))
                        .bearer_auth(&key)
                        .body(body),
                    "uploading a shadow prediction",
                )
                .await?;
            }
            send(
                client
                    .put(format!("{url}/reference?{acquisition}"))
                    .bearer_auth(&key)
                    .body(reference),
                "uploading a reference",
            )
            .await?;
            if let Some(body) = second {
                send(
                    client
                        .put(format!("{url}/reference?reader=r2&{acquisition}"))
                        .bearer_auth(&key)
                        .body(body),
                    "uploading the second reader's reference",
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    eprintln!("segwatch: uploaded {total} cases");
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dice(p: &[u8], r: &[u8], label: u8) -> f64 {
        let tp = p
            .iter()
            .zip(r)
            .filter(|(a, b)| **a == label && **b == label)
            .count() as f64;
        let np = p.iter().filter(|&&v| v == label).count() as f64;
        let nr = r.iter().filter(|&&v| v == label).count() as f64;
        2.0 * tp / (np + nr)
    }

    #[test]
    fn predictions_hit_the_drawn_dice() {
        let mut rng = StdRng::seed_from_u64(4);
        let r = reference(&mut rng);
        let targets = [0.95, 0.9, 0.85, 0.8, 0.7];
        let p = prediction(&mut rng, &r, &targets);
        for (organ, target) in STRUCTURES.iter().zip(targets) {
            let d = dice(&p, &r, organ.label);
            assert!(
                (d - target).abs() < 0.03,
                "{}: {d} for {target}",
                organ.name
            );
        }
    }

    #[test]
    fn a_shadow_version_differs_only_where_it_is_shifted() {
        let mut rng = StdRng::seed_from_u64(7);
        let r = reference(&mut rng);
        let targets = [0.95, 0.92, 0.9, 0.9, 0.8];
        let live = prediction(&mut rng, &r, &targets);
        let worse = ["spleen:0.1".parse::<ShadowShift>().unwrap()];
        let shadow = shadow_prediction(&mut rng, &r, &live, &targets, &worse);
        for organ in &STRUCTURES {
            let (l, s) = (dice(&live, &r, organ.label), dice(&shadow, &r, organ.label));
            if organ.name == "spleen" {
                assert!((s - 0.82).abs() < 0.03, "spleen: live {l}, shadow {s}");
                assert!(s < l - 0.05, "spleen: live {l}, shadow {s}");
            } else {
                assert_eq!(s, l, "{}", organ.name);
            }
        }
        assert_eq!(shadow_prediction(&mut rng, &r, &live, &targets, &[]), live);
        assert!("brain:0.1".parse::<ShadowShift>().is_err());
        assert!("spleen:1.5".parse::<ShadowShift>().is_err());
    }

    #[test]
    fn a_second_reader_disagrees_only_where_asked() {
        let mut rng = StdRng::seed_from_u64(9);
        let r = reference(&mut rng);
        let disagree = ["pancreas:0.4".parse::<ShadowShift>().unwrap()];
        let second = shadow_prediction(&mut rng, &r, &r, &[1.0; 5], &disagree);
        for organ in &STRUCTURES {
            let d = dice(&second, &r, organ.label);
            if organ.name == "pancreas" {
                assert!((d - 0.6).abs() < 0.03, "pancreas: {d}");
            } else {
                assert_eq!(d, 1.0, "{}", organ.name);
            }
        }
    }

    #[test]
    fn drift_specs_parse() {
        let d: DriftSpec = "day5:site2:liver:0.08".parse().unwrap();
        assert_eq!(
            d,
            DriftSpec {
                day: 5,
                site: 2,
                structure: "liver".into(),
                delta: 0.08
            }
        );
        assert!("day5:site2:brain:0.1".parse::<DriftSpec>().is_err());
        assert!("5:2:liver:0.1".parse::<DriftSpec>().is_err());
    }
}
