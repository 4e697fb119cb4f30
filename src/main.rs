//! The `segwatch` command: demo, eval, serve, migrate, keys, simulate and drift plan (see `cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    segwatch::cli::run()
}
