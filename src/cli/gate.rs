//! `segwatch gate`: asks a running segwatch whether a model version passes its
//! deployment gate; exit code 0 when it passes, 1 when it fails, for CI/CD.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;

use super::remote::{Service, ServiceArgs};

/// Options of `segwatch gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The model.
    #[arg(long)]
    model: String,
    /// The version to gate.
    #[arg(long)]
    version: String,
    /// Only this site's results.
    #[arg(long)]
    site: Option<String>,
    /// Only results scored since then (RFC 3339, such as 2026-11-01T00:00:00Z):
    /// the start of a shadow period.
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Print the service's JSON answer (the recorded decision) instead of the table.
    #[arg(long)]
    json: bool,
}

/// Asks for the gate's decision and prints it; exit code 0 when the version
/// passes, 1 when it fails (errors are 2, from the caller).
pub fn run(args: GateArgs) -> anyhow::Result<ExitCode> {
    let decision = super::remote::block_on(fetch(&args))?;
    let passed = decision["passed"]
        .as_bool()
        .context("the service's answer has no decision")?;
    let text = if args.json {
        format!("{decision:#}\n")
    } else {
        table(&decision)
    };
    super::print_out(&text)?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn fetch(args: &GateArgs) -> anyhow::Result<Value> {
    let service = Service::new(&args.service)?;
    let mut url = service.url(&format!(
        "/v1/models/{}/versions/{}/gate",
        args.model, args.version
    ))?;
    if let Some(site) = &args.site {
        url.query_pairs_mut().append_pair("site", site);
    }
    if let Some(since) = &args.since {
        url.query_pairs_mut()
            .append_pair("since", &since.to_rfc3339());
    }
    let what = format!("gating {} {}", args.model, args.version);
    service.call(service.client.post(url), &what).await
}

/// The verdict, one line per structure (cases, mean, lower bound against its
/// minimum, failure rate against its limit), then why each failing one fails.
fn table(decision: &Value) -> String {
    let number = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.4}"));
    let report = &decision["report"];
    let mut out = format!(
        "{} {}: {} (decision {}, {} cases{}, one-sided {}% lower bounds)\n{:<24} {:>6} {:>9} {:>11} {:>8} {:>12} {:>8}  gate\n",
        decision["model"].as_str().unwrap_or(""),
        decision["model_version"].as_str().unwrap_or(""),
        if decision["passed"] == true {
            "passes"
        } else {
            "FAILS"
        },
        decision["id"],
        report["cases"],
        decision["site"]
            .as_str()
            .map_or(String::new(), |site| format!(" at {site}")),
        report["level"].as_f64().map_or(f64::NAN, |l| l * 100.0),
        "structure",
        "cases",
        "mean Dice",
        "lower bound",
        "min",
        "failure rate",
        "max",
    );
    let structures = report["structures"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for s in structures {
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>9} {:>11} {:>8} {:>12} {:>8}  {}",
            s["name"].as_str().unwrap_or(""),
            s["n"].to_string(),
            number(&s["mean_dice"]),
            number(&s["lower_bound"]),
            number(&s["rule"]["min_mean_dice"]),
            number(&s["failure_rate"]),
            number(&s["rule"]["max_failure_rate"]),
            if s["passed"] == true { "pass" } else { "FAIL" },
        );
    }
    for s in structures {
        for reason in s["reasons"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{} fails: {}",
                s["name"].as_str().unwrap_or(""),
                reason.as_str().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_failing_structure_and_why() {
        let decision = serde_json::json!({
            "id": 3, "model": "m", "model_version": "v2", "site": "s", "passed": false,
            "report": {"cases": 5, "level": 0.95, "structures": [
                {"name": "liver", "n": 5, "mean_dice": 1.0, "lower_bound": 1.0, "failure_rate": 0.0,
                 "rule": {"min_mean_dice": 0.5, "failure_threshold": 0.5, "max_failure_rate": 0.1},
                 "passed": true, "failures": [], "reasons": []},
                {"name": "spleen", "n": 0, "mean_dice": null, "lower_bound": null, "failure_rate": null,
                 "rule": {"min_mean_dice": 0.8, "failure_threshold": 0.5, "max_failure_rate": 0.1},
                 "passed": false, "failures": [{"reason": "no_cases"}], "reasons": ["no validation cases"]}
            ]}
        });
        let text = table(&decision);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "m v2: FAILS (decision 3, 5 cases at s, one-sided 95% lower bounds)"
        );
        assert!(lines[2].starts_with("liver") && lines[2].ends_with("  pass"));
        // Columns line up under the header, the case count included.
        let cases_end = lines[1].find("cases").unwrap() + "cases".len();
        assert_eq!(&lines[2][cases_end - 1..=cases_end], "5 ", "{text}");
        assert!(lines[2].contains("1.0000"), "{}", lines[2]);
        assert!(lines[3].starts_with("spleen") && lines[3].ends_with("  FAIL"));
        assert!(lines[3].contains("     -"), "{}", lines[3]);
        assert_eq!(lines[4], "spleen fails: no validation cases");
        assert_eq!(lines.len(), 5);
    }
}
