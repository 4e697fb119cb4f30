//! Command-line entry points.

mod compare;
mod demo;
mod eval;
mod gate;
mod lesions;
mod output;
mod plan;
mod probabilities;
mod readers;
mod remote;
mod serve;
mod simulate;
mod strata;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Watches deployed segmentation models: scores AI segmentations against corrections.
#[derive(Debug, Parser)]
#[command(name = "segwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try segwatch: serve on a fresh embedded store, simulate a fleet with one
    /// injected drift, and show what segwatch found.
    Demo(demo::DemoArgs),
    /// Score prediction files against reference files, offline.
    Eval(Box<eval::EvalArgs>),
    /// Run the service: REST API, job workers and metrics.
    Serve(serve::ServeArgs),
    /// Apply the database migrations.
    Migrate(serve::ConfigArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
    /// Upload simulated cases (with an optional injected drift) to a running segwatch.
    Simulate(simulate::SimulateArgs),
    /// Drift detection: plan the false-alert budget and detection delays.
    #[command(subcommand)]
    Drift(plan::DriftCommand),
    /// Compare two versions of a model on a running segwatch, per structure.
    Compare(compare::CompareArgs),
    /// Whether a model version passes its deployment gate on a running
    /// segwatch: exit code 0 when it passes, 1 when it fails.
    Gate(gate::GateArgs),
    /// The agreement of several readers on a model version's cases, and the
    /// version against them, on a running segwatch, per structure.
    Readers(readers::ReadersArgs),
}

/// The error and its causes on one line, leaving out a cause that the message
/// before it already quotes (many library errors print their source too).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// Writes `text` to standard output. A reader that went away (`segwatch eval …
/// | head`) surfaces as a broken-pipe error, which [`run`] ends quietly.
fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Whether the failure is standard output closed by its reader.
fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parses the command line, runs the command and maps failure to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).map(|_| ExitCode::SUCCESS),
        Command::Eval(args) => eval::run(*args),
        Command::Serve(args) => serve::serve(args).map(|_| ExitCode::SUCCESS),
        Command::Migrate(args) => serve::migrate(args).map(|_| ExitCode::SUCCESS),
        Command::Keys(command) => serve::keys(command).map(|_| ExitCode::SUCCESS),
        Command::Simulate(args) => simulate::run(args).map(|_| ExitCode::SUCCESS),
        Command::Drift(command) => plan::run(command).map(|_| ExitCode::SUCCESS),
        Command::Compare(args) => compare::run(args),
        Command::Gate(args) => gate::run(args),
        Command::Readers(args) => readers::run(args).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // As ripgrep does: the reader has what it wanted.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("segwatch: error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_reader_is_recognised_through_context() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(broken_pipe(&anyhow::Error::new(pipe).context("writing")));
        assert!(!broken_pipe(&anyhow::anyhow!("broken pipe")));
    }

    #[test]
    fn error_lines_quote_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let quoting = anyhow::Error::new(io).context("cannot read a.nii: disk on fire");
        assert_eq!(one_line(&quoting), "cannot read a.nii: disk on fire");
        let plain = anyhow::anyhow!("connection refused").context("database unavailable");
        assert_eq!(one_line(&plain), "database unavailable: connection refused");
    }
}
