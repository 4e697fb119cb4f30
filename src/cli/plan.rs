//! `segwatch drift plan`: expected false alerts a month and detection delays
//! of a fleet before it goes live, or of a running deployment's streams.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::drift::plan::{DEFAULT_SPREADS, Fleet, Plan, plan};
use crate::drift::{Metric, RunLengthTarget};
use crate::schema::Schema;

#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// Expected false alerts a month per detector, and detection delays in cases
    /// and days, for a planned fleet or (with --url) a running deployment.
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Sites sending cases.
    #[arg(long, default_value_t = 20)]
    sites: u32,
    /// Structures per case.
    #[arg(long, default_value_t = 10)]
    structures: u32,
    /// Structures that also watch another drift metric, as METRIC:STRUCTURES
    /// (repeatable; lesion_sensitivity or ece), as a schema's drift_metrics do.
    #[arg(long = "watch", value_parser = parse_watch)]
    watch: Vec<(Metric, u32)>,
    /// A structure schema (JSON, as `PUT …/schema` takes): its structures and
    /// their drift_metrics stand for --structures and --watch.
    #[arg(long, conflicts_with_all = ["structures", "watch"])]
    schema: Option<PathBuf>,
    /// Cases a day at each site.
    #[arg(long, default_value_t = 50.0)]
    cases_per_day: f64,
    /// Cases in each structure's baseline.
    #[arg(long, default_value_t = crate::drift::RECOMMENDED_BASELINE)]
    baseline_cases: usize,
    /// Expected false alerts a month for the whole fleet (drift.false_alerts_per_month).
    #[arg(long, default_value_t = 1.0)]
    false_alerts_per_month: f64,
    /// Expert override: in-control run length in cases per stream and detector (drift.arl0).
    #[arg(long)]
    arl0: Option<f64>,
    /// Baseline failure rate of the structures (for the CUSUM's false alerts).
    #[arg(long, default_value_t = 0.03)]
    failure_rate: f64,
    /// Structure spreads for the delays, as MEAN:SD (repeatable); default
    /// liver-like 0.95:0.02 and pancreas-like 0.80:0.07.
    #[arg(long = "spread", value_parser = parse_spread)]
    spreads: Vec<(f64, f64)>,
    /// Simulated streams per change (fixed seeds).
    #[arg(long, default_value_t = 400)]
    streams: usize,
    /// Plan the running deployment at this segwatch URL instead (its active
    /// streams and baselines, and its configured budget).
    #[arg(long)]
    url: Option<String>,
    /// Read or admin key, with --url.
    #[arg(long, env = "SEGWATCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_spread(s: &str) -> Result<(f64, f64), String> {
    let (mean, sd) = s
        .split_once(':')
        .ok_or("expected MEAN:SD, e.g. 0.95:0.02")?;
    let mean: f64 = mean.parse().map_err(|_| "MEAN must be a number")?;
    let sd: f64 = sd.parse().map_err(|_| "SD must be a number")?;
    if !(0.1..1.0).contains(&mean) || !(0.001..0.3).contains(&sd) {
        return Err("MEAN must be in 0.1..1 and SD in 0.001..0.3".into());
    }
    Ok((mean, sd))
}

fn parse_watch(s: &str) -> Result<(Metric, u32), String> {
    let (metric, count) = s
        .split_once(':')
        .ok_or("expected METRIC:STRUCTURES, e.g. ece:4")?;
    let metric = Metric::parse(metric)
        .filter(|m| *m != Metric::Dice)
        .ok_or("METRIC must be lesion_sensitivity or ece (Dice is always watched)")?;
    let count: u32 = count
        .parse()
        .map_err(|_| "STRUCTURES must be a whole number")?;
    Ok((metric, count))
}

/// Structures of a schema, and how many watch each other metric.
fn schema_fleet(schema: &Schema) -> (u32, BTreeMap<Metric, u32>) {
    let mut watched = BTreeMap::new();
    for metric in schema.structures.iter().flat_map(|s| &s.drift_metrics) {
        *watched.entry(*metric).or_default() += 1;
    }
    (schema.structures.len() as u32, watched)
}

pub fn run(command: DriftCommand) -> anyhow::Result<()> {
    let DriftCommand::Plan(args) = command;
    let plan = match &args.url {
        Some(url) => remote(url, args.key.as_deref(), args.streams)?,
        None => local(&args)?,
    };
    if args.json {
        super::print_out(&(serde_json::to_string_pretty(&plan)? + "\n"))?;
    } else {
        super::print_out(&render(&plan))?;
    }
    Ok(())
}

fn local(args: &PlanArgs) -> anyhow::Result<Plan> {
    if args.sites == 0
        || args.structures == 0
        || args.cases_per_day.is_nan()
        || args.cases_per_day <= 0.0
    {
        bail!("--sites, --structures and --cases-per-day must be above 0");
    }
    if args.baseline_cases < crate::drift::MIN_BASELINE {
        bail!(
            "--baseline-cases must be at least {}",
            crate::drift::MIN_BASELINE
        );
    }
    if args.false_alerts_per_month.is_nan()
        || args.false_alerts_per_month <= 0.0
        || args.arl0.is_some_and(|a| !(100.0..=1e9).contains(&a))
    {
        bail!("--false-alerts-per-month must be above 0 and --arl0 from 100 to 1e9");
    }
    if !(0.0..0.5).contains(&args.failure_rate) || !(10..=5000).contains(&args.streams) {
        bail!("--failure-rate must be in 0..0.5 and --streams from 10 to 5000");
    }
    let (structures, watched) = match &args.schema {
        Some(path) => schema_fleet(&super::eval::read_schema(path)?),
        None => (args.structures, args.watch.iter().copied().collect()),
    };
    if watched.values().any(|&n| n > structures) {
        bail!("--watch cannot name more structures than --structures");
    }
    let fleet = Fleet {
        sites: args.sites,
        structures,
        watched,
        cases_per_day: args.cases_per_day,
        baseline_cases: args.baseline_cases,
        target: match args.arl0 {
            Some(cases) => RunLengthTarget::Arl0 { cases },
            None => RunLengthTarget::Budget {
                false_alerts_per_month: args.false_alerts_per_month,
            },
        },
        failure_rate: args.failure_rate,
        failure_threshold: crate::schema::DEFAULT_FAILURE_THRESHOLD,
    };
    let spreads = if args.spreads.is_empty() {
        DEFAULT_SPREADS.to_vec()
    } else {
        args.spreads.clone()
    };
    Ok(plan(
        &fleet,
        &spreads,
        args.streams,
        crate::drift::plan::HORIZON_DAYS,
    ))
}

fn remote(url: &str, key: Option<&str>, streams: usize) -> anyhow::Result<Plan> {
    let key = key.context("--url needs --key (or SEGWATCH_KEY): a read or admin key")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body: serde_json::Value = runtime.block_on(async {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()?
            .get(format!(
                "{}/v1/drift/plan?streams={streams}",
                url.trim_end_matches('/')
            ))
            .bearer_auth(key)
            .send()
            .await
            .context("segwatch unreachable")?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{status}: {}", body["detail"].as_str().unwrap_or(""));
        }
        anyhow::Ok(body)
    })?;
    Ok(serde_json::from_value(body)?)
}

/// The plan as text.
pub fn render(plan: &Plan) -> String {
    let mut out = format!(
        "fleet: {} sites × {} structures, {:.1} cases a day per site, baselines of {} cases\n\
         streams: {} (site and pooled: each structure's Dice, the per-case mean, other metrics watched); (stream, detector) pairs: {}\n",
        plan.sites,
        plan.structures,
        plan.cases_per_day,
        plan.baseline_cases,
        plan.streams,
        plan.pairs
    );
    for m in plan.metrics.iter().filter(|m| m.metric != Metric::Dice) {
        out += &format!(
            "  of which {}: {} structures, {} streams, {} pairs, ≤ {:.3} false alerts a month\n",
            m.metric, m.structures, m.streams, m.pairs, m.per_month
        );
    }
    if let Some(days) = plan.run_length_days {
        out += &format!(
            "in-control run length of each pair: {days:.0} days ({:.0} years)\n",
            days / 365.25
        );
    }
    out += "\nexpected false alerts a month\n";
    out += &format!("{:<12} {:>8} {:>12}\n", "detector", "streams", "per month");
    for f in &plan.false_alerts {
        out += &format!(
            "{:<12} {:>8} {:>12}\n",
            f.detector.as_str(),
            f.streams,
            format!(
                "{}{:.3}",
                if f.upper_bound { "≤ " } else { "" },
                f.per_month
            )
        );
    }
    out += &format!(
        "{:<12} {:>8} {:>12}\n",
        "all",
        "",
        format!("≤ {:.3}", plan.false_alerts_per_month)
    );
    out += "\ndetection delay on one site's structure stream (any detector), after the change\n";
    out += &format!(
        "{:<48} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
        "change", "median", "p90", "median", "p90", "within", "detected"
    );
    out += &format!(
        "{:<48} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
        "", "cases", "cases", "days", "days", "10 days", "(horizon)"
    );
    let cell =
        |v: Option<f64>, digits: usize| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
    for (name, d) in &plan.delays {
        out += &format!(
            "{:<48} {:>9} {:>9} {:>9} {:>9} {:>8.0}% {:>9.0}% ({:.0} d)\n",
            name,
            cell(d.median_cases, 0),
            cell(d.p90_cases, 0),
            cell(d.median_days, 1),
            cell(d.p90_days, 1),
            d.detected_within_10_days * 100.0,
            d.detected * 100.0,
            d.horizon_days
        );
    }
    out
}
