//! `segwatch readers`: the agreement of several readers on a model version's
//! cases, and the version against them, from a running segwatch, per
//! structure, as a table or JSON.

use std::fmt::Write as _;

use clap::Args;
use serde_json::Value;

use super::remote::{Service, ServiceArgs};

/// Options of `segwatch readers`.
#[derive(Debug, Args)]
pub struct ReadersArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The model.
    #[arg(long)]
    model: String,
    /// The model version.
    #[arg(long)]
    version: String,
    /// Only this site's cases.
    #[arg(long)]
    site: Option<String>,
    /// Print the service's JSON answer instead of the table.
    #[arg(long)]
    json: bool,
}

/// Fetches the reader report and prints it.
pub fn run(args: ReadersArgs) -> anyhow::Result<()> {
    let report = super::remote::block_on(fetch(&args))?;
    let text = if args.json {
        format!("{report:#}\n")
    } else {
        table(&report)
    };
    Ok(super::print_out(&text)?)
}

async fn fetch(args: &ReadersArgs) -> anyhow::Result<Value> {
    let service = Service::new(&args.service)?;
    let mut url = service.url(&format!("/v1/models/{}/readers", args.model))?;
    url.query_pairs_mut().append_pair("version", &args.version);
    if let Some(site) = &args.site {
        url.query_pairs_mut().append_pair("site", site);
    }
    let what = format!("the readers of {} {}", args.model, args.version);
    service.call(service.client.get(url), &what).await
}

/// One line per structure: cases, mean inter-reader Dice, the AI's mean Dice
/// against the readers and against their consensus, ambiguous cases, and
/// whether the AI is within inter-reader variability.
fn table(report: &Value) -> String {
    let number = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.4}"));
    let mut out = format!(
        "{} {} against its readers\n{:<24} {:>6} {:>12} {:>10} {:>13} {:>10}  verdict\n",
        report["model"].as_str().unwrap_or(""),
        report["model_version"].as_str().unwrap_or(""),
        "structure",
        "cases",
        "inter-reader",
        "AI-reader",
        "AI-consensus",
        "ambiguous",
    );
    for s in report["structures"].as_array().into_iter().flatten() {
        let verdict = if s["within_variability"] == true {
            "within inter-reader variability"
        } else {
            "outside inter-reader variability"
        };
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>12} {:>10} {:>13} {:>10}  {verdict}",
            s["structure"].as_str().unwrap_or(""),
            s["cases"].to_string(),
            number(&s["mean_inter_reader_dice"]),
            number(&s["mean_ai_vs_reader_dice"]),
            number(&s["mean_ai_vs_consensus_dice"]),
            s["ambiguous_cases"].to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::table;
    use serde_json::json;

    #[test]
    fn the_table_has_one_line_per_structure_with_its_verdict() {
        let report = json!({
            "model": "m", "model_version": "v1", "site": null,
            "structures": [
                {"structure": "liver", "cases": 3, "mean_inter_reader_dice": 0.9,
                 "mean_ai_vs_reader_dice": 0.92, "mean_ai_vs_consensus_dice": 0.95,
                 "ambiguous_cases": 0, "within_variability": true},
                {"structure": "spleen", "cases": 3, "mean_inter_reader_dice": 0.6,
                 "mean_ai_vs_reader_dice": 0.5, "mean_ai_vs_consensus_dice": 0.55,
                 "ambiguous_cases": 3, "within_variability": false}
            ]
        });
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("m v1 against its readers"));
        assert!(lines[2].starts_with("liver") && lines[2].contains("0.9000"));
        assert!(lines[2].ends_with("  within inter-reader variability"));
        // Numbers are right-aligned under their headings.
        let heading = lines[1].find("ambiguous").unwrap() + "ambiguous".len();
        assert_eq!(&lines[3][heading - 2..heading + 1], " 3 ", "{text}");
        assert!(lines[3].ends_with("outside inter-reader variability"));
    }
}
