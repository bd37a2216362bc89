//! The `triscope` binary: the desktop workbench and the command line.

mod cli;
mod gui;

fn main() -> std::process::ExitCode {
    triscope::device::keep_freed_memory();
    // SAFETY: the first statements of main; no other thread exists yet.
    unsafe { triscope::device::default_burn_device_to_cpu() };
    cli::run()
}
