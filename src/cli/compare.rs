//! `segwatch compare`: two versions of a model from a running segwatch, per
//! structure, as a table or JSON; an exit code for deployment pipelines.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::remote::{Service, ServiceArgs};

/// Options of `segwatch compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The model.
    #[arg(long)]
    model: String,
    /// Version A, the reference (usually the one in production).
    #[arg(long)]
    a: String,
    /// Version B, the candidate.
    #[arg(long)]
    b: String,
    /// Only this site's cases.
    #[arg(long)]
    site: Option<String>,
    /// Print the service's JSON answer instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit with 1 when B is worse than A on any structure.
    #[arg(long)]
    fail_if_worse: bool,
}

/// Fetches the comparison and prints it; exit code 1 with `--fail-if-worse`
/// when B is worse on a structure.
pub fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let report = super::remote::block_on(fetch(&args))?;
    let worse = report["structures"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["verdict"] == "b_worse");
    let text = if args.json {
        format!("{report:#}\n")
    } else {
        table(&report)
    };
    super::print_out(&text)?;
    Ok(if args.fail_if_worse && worse {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn fetch(args: &CompareArgs) -> anyhow::Result<Value> {
    let service = Service::new(&args.service)?;
    let mut url = service.url(&format!("/v1/models/{}/compare", args.model))?;
    url.query_pairs_mut()
        .append_pair("a", &args.a)
        .append_pair("b", &args.b);
    if let Some(site) = &args.site {
        url.query_pairs_mut().append_pair("site", site);
    }
    let what = format!("comparing {} {} with {}", args.model, args.b, args.a);
    service.call(service.client.get(url), &what).await
}

/// A p-value to four places, or `<0.0001` below them.
fn p_value(v: &Value) -> String {
    match v.as_f64() {
        Some(p) if p < 1e-4 => "<0.0001".to_owned(),
        Some(p) => format!("{p:.4}"),
        None => "-".to_owned(),
    }
}

/// One line per structure: design, cases, means, B − A with its interval,
/// the test's p-value, and the verdict; then the structures not compared.
fn table(report: &Value) -> String {
    let number = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.4}"));
    let mut out = format!(
        "{} {} (B) against {} (A), {} and {} cases\n{:<24} {:<9} {:>6} {:>8} {:>8} {:>28} {:>9}  verdict\n",
        report["model"].as_str().unwrap_or(""),
        report["b"].as_str().unwrap_or(""),
        report["a"].as_str().unwrap_or(""),
        report["cases_b"],
        report["cases_a"],
        "structure",
        "design",
        "cases",
        "mean A",
        "mean B",
        "B - A [95% CI]",
        "p",
    );
    for s in report["structures"].as_array().into_iter().flatten() {
        let cases = if s["design"] == "paired" {
            s["n_paired"].to_string()
        } else {
            format!("{}/{}", s["n_a"], s["n_b"])
        };
        let difference = format!(
            "{:+.4} [{:+.4}, {:+.4}]",
            s["mean_difference"].as_f64().unwrap_or(f64::NAN),
            s["interval"]["lower"].as_f64().unwrap_or(f64::NAN),
            s["interval"]["upper"].as_f64().unwrap_or(f64::NAN),
        );
        let verdict = match s["verdict"].as_str() {
            Some("b_worse") => "B worse",
            Some("b_better") => "B better",
            _ => "no evidence",
        };
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:>6} {:>8} {:>8} {:>28} {:>9}  {verdict}",
            s["structure"].as_str().unwrap_or(""),
            s["design"].as_str().unwrap_or(""),
            cases,
            number(&s["mean_a"]),
            number(&s["mean_b"]),
            difference,
            p_value(&s["result"]["p_value"]),
        );
    }
    for n in report["not_compared"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<24} not compared: {}",
            n["structure"].as_str().unwrap_or(""),
            n["reason"].as_str().unwrap_or("")
        );
    }
    out
}
