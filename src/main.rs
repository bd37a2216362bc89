//! The `triscope` binary: the desktop workbench and the command line.

mod cli;
mod cli_attack;
mod cli_audit;
mod cli_explain;
mod cli_train;
mod gui;

fn main() -> std::process::ExitCode {
    triscope::device::keep_freed_memory();
    cli::run()
}
