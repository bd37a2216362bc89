//! The desktop workbench (eframe/egui with the wgpu renderer).
//!
//! Only the binary knows egui; the library's [`triscope::workbench`] worker owns the model
//! and answers in plain data.

pub mod app;
pub mod attack;
pub mod audit;
pub mod axes;
pub mod compare;
pub mod concepts;
pub mod explain;
pub mod export;
pub mod gallery;
pub mod layers;
pub mod overlay;
pub mod predictions;
pub mod report;
pub mod slide;
pub mod state;
pub mod sweep;
pub mod training;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use eframe::egui;
use eframe::egui_wgpu::{WgpuSetup, WgpuSetupExisting};
use triscope::model::device::{ComputeDevice, DeviceChoice};

pub use app::{AppInit, TriscopeApp};

/// Start options from the command line.
pub struct GuiOptions {
    pub model: Option<PathBuf>,
    pub device: DeviceChoice,
    pub samples_dir: PathBuf,
    /// Bundled checkpoints, offered in the File menu.
    pub models_dir: PathBuf,
    pub ready_file: Option<PathBuf>,
    /// An image, folder, model or audit report to open at start.
    pub open: Option<PathBuf>,
}

/// Open the window and run until it is closed.
pub fn run(opts: GuiOptions) -> Result<()> {
    let device = ComputeDevice::select(opts.device)?;
    let mut native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Triscope")
            .with_app_id("triscope")
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    // On a real GPU burn created the wgpu device; the renderer adopts it so both share one
    // device and queue. (The reverse fails: eframe's device lacks TIMESTAMP_QUERY.)
    let mut shared_device = false;
    if device.is_gpu()
        && let Some(setup) = &device.wgpu_setup
    {
        native.wgpu_options.wgpu_setup = WgpuSetup::Existing(WgpuSetupExisting {
            instance: setup.instance.clone(),
            adapter: setup.adapter.clone(),
            device: setup.device.clone(),
            queue: setup.queue.clone(),
        });
        shared_device = true;
    }
    let init = AppInit {
        device,
        model: opts.model,
        samples_dir: opts.samples_dir,
        models_dir: opts.models_dir,
        ready_file: opts.ready_file,
        open: opts.open,
        restore_state: true,
        shared_device,
    };
    eframe::run_native(
        "Triscope",
        native,
        Box::new(move |cc| Ok(Box::new(TriscopeApp::new(cc, init)))),
    )
    .map_err(|e| anyhow!("the window could not open: {e}"))
}

/// A background job's wake-up: repaint the UI after each event it sends (nothing until the
/// app has set the panel's hook).
pub fn wake_hook(wake: Option<std::sync::Arc<dyn Fn() + Send + Sync>>) -> Box<dyn Fn() + Send> {
    Box::new(move || {
        if let Some(w) = &wake {
            w();
        }
    })
}
