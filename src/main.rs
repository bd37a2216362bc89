//! The `triscope` binary: the desktop workbench and the command line.

mod cli;
mod cli_attack;
mod gui;

fn main() -> std::process::ExitCode {
    cli::run()
}
