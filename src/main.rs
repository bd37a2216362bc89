//! The `triscope` binary: the desktop workbench and the command line.

mod cli;
mod gui;
mod process;

fn main() -> std::process::ExitCode {
    process::keep_freed_memory();
    // SAFETY: the first statements of main; no other thread exists yet.
    unsafe { process::default_burn_device_to_cpu() };
    cli::run()
}
