//! The `triscope` binary: the command line (and, in a later release, the desktop app).

mod cli;
mod cli_attack;
mod cli_train;

fn main() -> std::process::ExitCode {
    cli::run()
}
