//! Rendering eval results as tables and CSV, and the per-structure summary of a
//! folder run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::eval::{CaseOutcome, CaseReport};
use super::strata::Stratum;
use crate::metrics::probabilistic::Probabilistic;
use crate::metrics::{Empty, StructureMetrics, structure_name};

/// Readable name of a structure: its name, else its code, else its label.
fn number(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

fn optional(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| number(v, decimals))
}

/// Lays out rows under a header with columns padded to their widest cell.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

/// The default `eval` output for one pair.
pub fn case_table(report: &CaseReport) -> String {
    let dims = |v: &[String]| v.join(" × ");
    let shape: Vec<String> = report.grid.shape.iter().map(|v| v.to_string()).collect();
    let spacing: Vec<String> = report
        .grid
        .spacing_mm
        .iter()
        .map(|v| format!("{v}"))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "prediction  {}", report.prediction);
    let _ = writeln!(out, "reference   {}", report.reference);
    let _ = writeln!(
        out,
        "grid        {} voxels of {} mm; surface {}, NSD tolerance {} mm\n",
        dims(&shape),
        dims(&spacing),
        report.surface.as_str(),
        report.tolerance_mm
    );
    let rows: Vec<Vec<String>> = report
        .structures
        .iter()
        .map(|s| {
            vec![
                s.display_name(),
                s.empty.as_str().into(),
                number(s.dice, 4),
                number(s.iou, 4),
                number(s.hd_mm, 2),
                number(s.hd95_mm, 2),
                number(s.assd_mm, 3),
                number(s.nsd, 4),
                number(s.pred_volume_ml, 2),
                number(s.ref_volume_ml, 2),
            ]
        })
        .collect();
    out += &columns(
        &[
            "structure",
            "empty",
            "dice",
            "iou",
            "hd_mm",
            "hd95_mm",
            "assd_mm",
            "nsd",
            "pred_ml",
            "ref_ml",
        ],
        &rows,
    );
    let _ = writeln!(out, "\nmean Dice {}", optional(report.mean_dice, 4));
    let _ = writeln!(
        out,
        "generalized Dice {}",
        optional(report.generalized_dice, 4)
    );
    for p in &report.probabilistic {
        let m = &p.metrics;
        let _ = writeln!(
            out,
            "probabilities of {}: soft Dice {}, Brier {}, ECE {} ({} bins)",
            structure_name(p.name.as_deref(), p.code.as_deref(), p.label),
            number(m.soft_dice, 4),
            number(m.brier, 6),
            number(m.ece, 6),
            m.ece_bins,
        );
    }
    for l in &report.lesions {
        let m = &l.metrics;
        let _ = writeln!(
            out,
            "lesions of {}: {} in the reference, {} predicted; TP {} FP {} FN {}; sensitivity {}, lesion-wise Dice {}, PQ {}",
            crate::metrics::structure_name(l.name.as_deref(), None, Some(l.label)),
            m.ref_instances,
            m.pred_instances,
            m.tp,
            m.fp,
            m.fn_,
            optional(Some(m.sensitivity), 4),
            optional(Some(m.lesion_dice), 4),
            optional(Some(m.pq), 4),
        );
    }
    out
}

/// Quotes a CSV field when it needs it.
fn csv_field(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) if s.contains([',', '"', '\n']) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// CSV of serializable records, columns in field order; an optional leading
/// `case` column.
fn csv<T: Serialize>(records: &[(Option<&str>, &T)]) -> String {
    let mut out = String::new();
    let mut header_written = false;
    for (case, record) in records {
        let serde_json::Value::Object(fields) = serde_json::to_value(record).unwrap_or_default()
        else {
            continue;
        };
        if !header_written {
            let names: Vec<&str> = case
                .map(|_| "case")
                .into_iter()
                .chain(fields.keys().map(String::as_str))
                .collect();
            out += &(names.join(",") + "\n");
            header_written = true;
        }
        let cells: Vec<String> = case
            .map(|c| csv_field(&c.into()))
            .into_iter()
            .chain(fields.values().map(csv_field))
            .collect();
        out += &(cells.join(",") + "\n");
    }
    out
}

/// Probabilistic columns of the structures CSV, empty for a structure without probabilities.
const SOFT_COLUMNS: [&str; 3] = ["soft_dice", "brier", "ece"];

/// One CSV row per structure, with a leading case column when `case` is given
/// and the probabilistic columns when `soft` is.
pub fn structures_csv(case: Option<&str>, report: &CaseReport, soft: bool) -> String {
    let rows: Vec<serde_json::Value> = report
        .structures
        .iter()
        .map(|s| {
            let mut row = serde_json::to_value(s).unwrap_or_default();
            if let (true, serde_json::Value::Object(fields)) = (soft, &mut row) {
                let scores = report
                    .probabilistic
                    .iter()
                    .find(|p| (p.label, &p.code, &p.name) == (s.label, &s.code, &s.name))
                    .and_then(|p| serde_json::to_value(&p.metrics).ok());
                for column in SOFT_COLUMNS {
                    let value = scores.as_ref().map(|v| v[column].clone());
                    fields.insert(column.into(), value.unwrap_or_default());
                }
            }
            row
        })
        .collect();
    let rows: Vec<(Option<&str>, &serde_json::Value)> = rows.iter().map(|r| (case, r)).collect();
    csv(&rows)
}

/// Per-structure statistics over the cases of a folder run.
#[derive(Debug, Serialize)]
pub struct StructureSummary {
    pub label: Option<u16>,
    pub code: Option<String>,
    pub name: Option<String>,
    /// Cases where the structure was scored.
    pub cases: usize,
    pub empty_both: usize,
    pub empty_pred: usize,
    pub empty_ref: usize,
    /// Dice statistics over cases not empty on both sides.
    pub dice_mean: Option<f64>,
    pub dice_median: Option<f64>,
    pub dice_p5: Option<f64>,
    /// Over cases with both sides present.
    pub hd95_median_mm: Option<f64>,
    pub nsd_mean: Option<f64>,
    /// Probabilistic scores, on every structure when any case of the run was
    /// scored with probabilities (`--prob-dir`); left out otherwise.
    #[serde(flatten)]
    pub soft: Option<SoftSummary>,
}

/// Means over the cases that scored a structure with probabilities (each
/// case's value as `eval` reports it; ECE per case, then averaged).
#[derive(Debug, Serialize)]
pub struct SoftSummary {
    pub soft_cases: usize,
    pub soft_dice_mean: Option<f64>,
    pub brier_mean: Option<f64>,
    pub ece_mean: Option<f64>,
}

/// Linear-interpolation percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q * last as f64;
    let lo = position.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64))
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Summarises each structure over the cases that scored it.
pub fn summarize(outcomes: &[CaseOutcome]) -> Vec<StructureSummary> {
    let reports = || outcomes.iter().filter_map(|o| o.report.as_ref());
    let soft_run = reports().any(|r| !r.probabilistic.is_empty());
    let soft = |label: Option<u16>, code: &Option<String>| {
        let scores: Vec<&Probabilistic> = reports()
            .flat_map(|r| &r.probabilistic)
            .filter(|p| p.label == label && &p.code == code)
            .map(|p| &p.metrics)
            .collect();
        let finite = |value: fn(&Probabilistic) -> f64| {
            let values: Vec<f64> = scores
                .iter()
                .map(|p| value(p))
                .filter(|v| v.is_finite())
                .collect();
            mean(&values)
        };
        SoftSummary {
            soft_cases: scores.len(),
            soft_dice_mean: finite(|p| p.soft_dice),
            brier_mean: finite(|p| p.brier),
            ece_mean: finite(|p| p.ece),
        }
    };
    let mut by_structure: BTreeMap<(Option<u16>, Option<String>), Vec<&StructureMetrics>> =
        BTreeMap::new();
    for report in outcomes.iter().filter_map(|o| o.report.as_ref()) {
        for s in &report.structures {
            by_structure
                .entry((s.label, s.code.clone()))
                .or_default()
                .push(s);
        }
    }
    by_structure
        .into_values()
        .map(|list| {
            let count = |e: Empty| list.iter().filter(|s| s.empty == e).count();
            let sorted = |values: Vec<f64>| {
                let mut v = values;
                v.sort_by(f64::total_cmp);
                v
            };
            let dice = sorted(
                list.iter()
                    .filter(|s| s.empty != Empty::Both)
                    .map(|s| s.dice)
                    .collect(),
            );
            let hd95 = sorted(
                list.iter()
                    .filter(|s| s.empty == Empty::None)
                    .map(|s| s.hd95_mm)
                    .collect(),
            );
            let nsd: Vec<f64> = list
                .iter()
                .filter(|s| s.empty != Empty::Both)
                .map(|s| s.nsd)
                .collect();
            StructureSummary {
                label: list[0].label,
                code: list[0].code.clone(),
                name: list[0].name.clone(),
                cases: list.len(),
                empty_both: count(Empty::Both),
                empty_pred: count(Empty::Pred),
                empty_ref: count(Empty::Ref),
                dice_mean: mean(&dice),
                dice_median: percentile(&dice, 0.5),
                dice_p5: percentile(&dice, 0.05),
                hd95_median_mm: percentile(&hd95, 0.5),
                nsd_mean: mean(&nsd),
                soft: soft_run.then(|| soft(list[0].label, &list[0].code)),
            }
        })
        .collect()
}

pub fn summary_csv(summary: &[StructureSummary]) -> String {
    let rows: Vec<(Option<&str>, &StructureSummary)> = summary.iter().map(|s| (None, s)).collect();
    csv(&rows)
}

/// Size strata as a table: Dice and, for lesion-wise structures, detection.
pub fn strata_table(strata: &[Stratum]) -> String {
    let count = |v: Option<usize>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let rows: Vec<Vec<String>> = strata
        .iter()
        .map(|s| {
            vec![
                s.structure.clone(),
                s.band.clone(),
                s.cases.to_string(),
                optional(s.dice_mean, 4),
                count(s.lesions),
                count(s.lesions_detected),
                optional(s.lesion_sensitivity, 4),
            ]
        })
        .collect();
    columns(
        &[
            "structure",
            "reference volume",
            "cases",
            "dice_mean",
            "lesions",
            "detected",
            "sensitivity",
        ],
        &rows,
    )
}

pub fn summary_table(summary: &[StructureSummary], scored: usize, failed: usize) -> String {
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            vec![
                structure_name(s.name.as_deref(), s.code.as_deref(), s.label),
                s.cases.to_string(),
                optional(s.dice_mean, 4),
                optional(s.dice_median, 4),
                optional(s.dice_p5, 4),
                optional(s.hd95_median_mm, 2),
                optional(s.nsd_mean, 4),
                format!("{}/{}/{}", s.empty_both, s.empty_pred, s.empty_ref),
            ]
            .into_iter()
            .chain(s.soft.iter().flat_map(|p| {
                [
                    optional(p.soft_dice_mean, 4),
                    optional(p.brier_mean, 6),
                    optional(p.ece_mean, 6),
                ]
            }))
            .collect()
        })
        .collect();
    let mut names = vec![
        "structure",
        "cases",
        "dice_mean",
        "dice_median",
        "dice_p5",
        "hd95_median_mm",
        "nsd_mean",
        "empty both/pred/ref",
    ];
    if summary.iter().any(|s| s.soft.is_some()) {
        names.extend(["soft_dice_mean", "brier_mean", "ece_mean"]);
    }
    format!("{scored} cases scored, {failed} failed\n\n") + &columns(&names, &rows)
}

/// Writes results.json, results.csv, summary.json and summary.csv into `dir`.
pub fn write_folder(
    dir: &Path,
    outcomes: &[CaseOutcome],
    summary: &[StructureSummary],
    strata: &[Stratum],
) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| path.display().to_string())
    };
    write(
        "results.json",
        serde_json::to_string_pretty(outcomes)? + "\n",
    )?;
    let soft = outcomes
        .iter()
        .filter_map(|o| o.report.as_ref())
        .any(|r| !r.probabilistic.is_empty());
    let mut rows = String::new();
    for outcome in outcomes {
        if let Some(report) = &outcome.report {
            let csv = structures_csv(Some(&outcome.case), report, soft);
            // Keep the header only once.
            let body = if rows.is_empty() {
                csv.as_str()
            } else {
                csv.split_once('\n').map_or("", |(_, b)| b)
            };
            rows += body;
        }
    }
    write("results.csv", rows)?;
    write(
        "summary.json",
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    write("summary.csv", summary_csv(summary))?;
    write("strata.json", serde_json::to_string_pretty(strata)? + "\n")?;
    let rows: Vec<(Option<&str>, &Stratum)> = strata.iter().map(|s| (None, s)).collect();
    write("strata.csv", csv(&rows))?;
    Ok(())
}
