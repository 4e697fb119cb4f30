//! `segwatch eval`: one pair of files, or two folders paired by file name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use super::lesions::{LesionArgs, LesionRequest, StructureLesions};
use super::output;
use super::probabilities::{ProbabilityArgs, StructureProbabilistic};
use crate::formats::{self, Limits};
use crate::metrics::pairing::{self, Request};
use clap::builder::TypedValueParser;

use crate::metrics::{self, Settings, StructureMetrics, SurfaceMode};
use crate::schema::Schema;
use crate::volume::{Grid, Segmentation};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("pair").args(["pred", "reference"]).multiple(true).conflicts_with("dirs")))]
#[command(group(clap::ArgGroup::new("dirs").args(["pred_dir", "ref_dir"]).multiple(true)))]
pub struct EvalArgs {
    /// Prediction file (NIfTI .nii / .nii.gz, or DICOM SEG).
    #[arg(requires = "reference")]
    pred: Option<PathBuf>,
    /// Reference (corrected) file on the same grid.
    #[arg(requires = "pred")]
    reference: Option<PathBuf>,
    /// Folder of prediction files, paired with --ref-dir by file name.
    #[arg(long, requires = "ref_dir")]
    pred_dir: Option<PathBuf>,
    /// Folder of reference files.
    #[arg(long, requires = "pred_dir")]
    ref_dir: Option<PathBuf>,
    /// Folder mode: write results and summary (JSON and CSV) here.
    #[arg(long, requires = "pred_dir")]
    out: Option<PathBuf>,
    /// Structures to score, including ones absent from both files
    /// (default: every non-zero label present in either file).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<u16>>,
    /// Surface definition for distance metrics.
    #[arg(long, default_value = "voxel", value_parser = surface_mode())]
    surface: SurfaceMode,
    /// Normalised surface Dice tolerance in mm.
    #[arg(long, default_value_t = crate::schema::DEFAULT_TOLERANCE_MM, value_parser = positive_mm)]
    tolerance_mm: f64,
    /// Structure schema (JSON): label values and segment codes with names and
    /// NSD tolerances; pairs DICOM SEG segments with NIfTI labels.
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    lesions: LesionArgs,
    #[command(flatten)]
    probabilities: ProbabilityArgs,
}

/// `--surface`: the engine's mode names, listed in `--help`.
fn surface_mode() -> impl clap::builder::TypedValueParser<Value = SurfaceMode> {
    clap::builder::PossibleValuesParser::new(SurfaceMode::NAMES)
        .try_map(|name| name.parse::<SurfaceMode>())
}

fn positive_mm(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s} is not a tolerance in mm (a number ≥ 0)")),
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// The result of one prediction/reference pair, as `eval --format json` prints it.
#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub prediction: String,
    pub reference: String,
    pub surface: SurfaceMode,
    pub tolerance_mm: f64,
    pub grid: GridReport,
    pub structures: Vec<StructureMetrics>,
    pub mean_dice: Option<f64>,
    /// Generalized Dice score over the structures (`metrics::generalized_dice`).
    pub generalized_dice: Option<f64>,
    /// Lesion-wise metrics of the structures asked for (none: left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lesions: Vec<StructureLesions>,
    /// Probabilistic scores of the structures with probabilities (none: left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probabilistic: Vec<StructureProbabilistic>,
}

/// Shape and spacing in array axis order.
#[derive(Debug, Serialize)]
pub struct GridReport {
    pub shape: Vec<usize>,
    /// Rounded to single precision, the precision NIfTI-1 stores it in.
    pub spacing_mm: Vec<f32>,
}

impl From<&Grid> for GridReport {
    fn from(grid: &Grid) -> Self {
        GridReport {
            shape: grid.shape_vec(),
            spacing_mm: grid.spacing_vec().iter().map(|&s| s as f32).collect(),
        }
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = args.threads {
        pool = pool.num_threads(n);
    }
    let pool = pool.build().context("cannot start worker threads")?;
    pool.install(
        || match (&args.pred, &args.reference, &args.pred_dir, &args.ref_dir) {
            (Some(pred), Some(reference), None, None) => run_pair(&args, pred, reference),
            (None, None, Some(pred_dir), Some(ref_dir)) => run_folders(&args, pred_dir, ref_dir),
            _ => bail!("give either PRED REF, or --pred-dir and --ref-dir"),
        },
    )
}

fn settings(args: &EvalArgs) -> Settings {
    Settings {
        surface: args.surface,
        tolerance_mm: args.tolerance_mm,
    }
}

/// A structure schema file, validated.
pub(super) fn read_schema(path: &Path) -> anyhow::Result<Schema> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let schema: Schema = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid structure schema", path.display()))?;
    schema
        .validate()
        .with_context(|| path.display().to_string())?;
    Ok(schema)
}

fn read(path: &Path) -> anyhow::Result<Segmentation> {
    formats::read_path(path, &Limits::default()).with_context(|| path.display().to_string())
}

/// Where a pair's probabilities come from: a float NIfTI file, else the
/// prediction's FRACTIONAL PROBABILITY segments; and the ECE's bins.
pub struct Soft<'a> {
    pub file: Option<&'a Path>,
    pub bins: usize,
}

/// Decodes both files (in parallel) and scores them.
pub fn evaluate_files(
    pred: &Path,
    reference: &Path,
    request: &Request,
    lesions: &LesionRequest,
    soft: &Soft,
) -> anyhow::Result<CaseReport> {
    let (p, r) = rayon::join(|| read(pred), || read(reference));
    let (p, r) = (p?, r?);
    let context = || format!("{} and {}", pred.display(), reference.display());
    let evaluation = pairing::evaluate(&p, &r, request).with_context(context)?;
    let lesions = lesions.score(&p, &r).with_context(context)?;
    let probabilistic = super::probabilities::score(&p, &r, &evaluation, soft.file, soft.bins)
        .with_context(context)?;
    Ok(CaseReport {
        prediction: pred.display().to_string(),
        reference: reference.display().to_string(),
        surface: request.settings.surface,
        tolerance_mm: request.settings.tolerance_mm,
        grid: (&evaluation.grid).into(),
        mean_dice: metrics::mean_dice(&evaluation.structures),
        generalized_dice: metrics::generalized_dice(&evaluation.structures),
        structures: evaluation.structures,
        lesions,
        probabilistic,
    })
}

fn run_pair(args: &EvalArgs, pred: &Path, reference: &Path) -> anyhow::Result<ExitCode> {
    args.probabilities.check_mode(false)?;
    let schema = args.schema.as_deref().map(read_schema).transpose()?;
    let request = Request {
        schema: schema.as_ref(),
        labels: args.labels.as_deref(),
        settings: settings(args),
    };
    let lesions = LesionRequest::new(&args.lesions, schema.as_ref());
    let soft = Soft {
        file: args.probabilities.probabilities.as_deref(),
        bins: args.probabilities.ece_bins,
    };
    let report = evaluate_files(pred, reference, &request, &lesions, &soft)?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Csv => output::structures_csv(None, &report, !report.probabilistic.is_empty()),
        Format::Table => output::case_table(&report),
    };
    super::print_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The case name of a file: its name without `.nii.gz`, `.nii` or `.dcm`.
fn case_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    [".nii.gz", ".nii", ".dcm"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .map(str::to_owned)
}

fn list_cases(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut cases = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.is_file()
            && let Some(case) = case_name(&path)
        {
            cases.insert(case, path);
        }
    }
    Ok(cases)
}

/// One case of a folder run: its report, or why it failed.
#[derive(Debug, Serialize)]
pub struct CaseOutcome {
    pub case: String,
    #[serde(flatten)]
    pub report: Option<CaseReport>,
    pub error: Option<String>,
}

fn run_folders(args: &EvalArgs, pred_dir: &Path, ref_dir: &Path) -> anyhow::Result<ExitCode> {
    args.probabilities.check_mode(true)?;
    let preds = list_cases(pred_dir)?;
    let refs = list_cases(ref_dir)?;
    for case in preds.keys().filter(|c| !refs.contains_key(*c)) {
        eprintln!(
            "segwatch: warning: {case}: no reference in {}",
            ref_dir.display()
        );
    }
    for case in refs.keys().filter(|c| !preds.contains_key(*c)) {
        eprintln!(
            "segwatch: warning: {case}: no prediction in {}",
            pred_dir.display()
        );
    }
    let pairs: Vec<(&String, &PathBuf, &PathBuf)> = preds
        .iter()
        .filter_map(|(case, p)| refs.get(case).map(|r| (case, p, r)))
        .collect();
    if pairs.is_empty() {
        bail!(
            "no file names in common between {} and {}",
            pred_dir.display(),
            ref_dir.display()
        );
    }
    let progress = ProgressBar::new(pairs.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} cases, {elapsed} elapsed, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let schema = args.schema.as_deref().map(read_schema).transpose()?;
    let request = Request {
        schema: schema.as_ref(),
        labels: args.labels.as_deref(),
        settings: settings(args),
    };
    let lesions = LesionRequest::new(&args.lesions, schema.as_ref());
    let outcomes: Vec<CaseOutcome> = pairs
        .par_iter()
        .map(|&(case, pred, reference)| {
            let file = args.probabilities.case_file(case);
            let soft = Soft {
                file: file.as_deref(),
                bins: args.probabilities.ece_bins,
            };
            let result = evaluate_files(pred, reference, &request, &lesions, &soft);
            progress.inc(1);
            match result {
                Ok(report) => CaseOutcome {
                    case: case.clone(),
                    report: Some(report),
                    error: None,
                },
                Err(err) => {
                    progress.suspend(|| eprintln!("segwatch: error: {err:#}"));
                    CaseOutcome {
                        case: case.clone(),
                        report: None,
                        error: Some(format!("{err:#}")),
                    }
                }
            }
        })
        .collect();
    progress.finish_and_clear();

    let summary = output::summarize(&outcomes);
    let strata = super::strata::strata(&outcomes, schema.as_ref());
    if let Some(out) = &args.out {
        output::write_folder(out, &outcomes, &summary, &strata)?;
        eprintln!(
            "segwatch: wrote results and summary for {} cases to {}",
            outcomes.len(),
            out.display()
        );
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&summary)? + "\n",
        Format::Csv => output::summary_csv(&summary),
        Format::Table => {
            output::summary_table(&summary, outcomes.len() - failed, failed)
                + "\nby reference volume\n"
                + &output::strata_table(&strata)
        }
    };
    super::print_out(&text)?;
    Ok(if failed > 0 {
        eprintln!("segwatch: {failed} of {} cases failed", outcomes.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
