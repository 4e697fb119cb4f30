//! Command-line entry points.

mod eval;
mod output;
mod serve;
mod simulate;

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
    /// Score prediction files against reference files, offline.
    Eval(eval::EvalArgs),
    /// Run the service: REST API, job workers and metrics.
    Serve(serve::ServeArgs),
    /// Apply the database migrations.
    Migrate(serve::ConfigArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
    /// Upload simulated cases (with an optional injected drift) to a running segwatch.
    Simulate(simulate::SimulateArgs),
}

/// Parses the command line, runs the command and maps failure to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => serve::serve(args).map(|_| ExitCode::SUCCESS),
        Command::Migrate(args) => serve::migrate(args).map(|_| ExitCode::SUCCESS),
        Command::Keys(command) => serve::keys(command).map(|_| ExitCode::SUCCESS),
        Command::Simulate(args) => simulate::run(args).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("segwatch: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
