use std::process::ExitCode;

fn main() -> ExitCode {
    segwatch::cli::run()
}
