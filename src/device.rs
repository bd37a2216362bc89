//! Compute devices: burn's wgpu backend on a GPU, burn's flex backend on the CPU.
//!
//! `auto` takes a real GPU through wgpu when there is one and the CPU otherwise. A software
//! Vulkan adapter (lavapipe, adapter type `Cpu`) counts as no GPU for `auto`: flex on the CPU
//! is ~75x faster than wgpu on lavapipe for a ResNet-50 forward. `gpu` takes any wgpu
//! adapter, software ones included (used by the tests that check the wgpu path without a GPU).

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};

/// Keep freed memory in the process instead of handing it back to the operating system
/// (glibc: no `mmap` for large blocks, no trimming of the heap). A training step or a batched
/// attack frees and reallocates the same tens of megabytes of activations every pass; handed
/// back, every new allocation page-faults and the kernel zeroes it again (measured: 19% of a
/// TRADES step on 2 cores). The price is that the resident size stays at its peak. Binaries
/// call this once at start; elsewhere (other C libraries) it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread that
    // allocates is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Make burn's default device the CPU (flex). Triscope names its device everywhere, but burn
/// itself takes `Device::default()` where it is given none: `ModuleOptimizer::load_record`
/// (a resumed run's optimizer state) stages the state there before the next step moves it to
/// the parameters' device. That default is the first backend compiled in, wgpu, so resuming a
/// CPU run started Vulkan (and printed the loader's and Mesa's warnings, e.g. about
/// `XDG_RUNTIME_DIR`) for nothing. `BURN_DEVICE` is burn's own switch for that default; it
/// changes nothing that names a device.
///
/// # Safety
///
/// Writes the process environment: call it before any other thread is started (the start of
/// `main`), as `std::env::set_var` requires.
pub unsafe fn default_burn_device_to_cpu() {
    // SAFETY: the caller guarantees that no other thread reads or writes the environment.
    unsafe { std::env::set_var("BURN_DEVICE", "flex") };
}

/// On Linux a hardware GPU shows up as a DRM render node or an NVIDIA device file; without
/// one, only a software adapter could answer, so `auto` does not probe (which also keeps the
/// Vulkan loader's warnings about a missing display off headless terminals).
fn gpu_device_nodes_present() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let has_prefix = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or(false)
    };
    has_prefix("/dev/dri", "renderD") || has_prefix("/dev", "nvidia")
}

/// Vulkan on Linux and Windows, Metal on Apple platforms.
fn native_graphics_api() -> burn::tensor::wgpu::WgpuBackend {
    if cfg!(target_vendor = "apple") {
        burn::tensor::wgpu::WgpuBackend::Metal
    } else {
        burn::tensor::wgpu::WgpuBackend::Vulkan
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl crate::choice::Choice for DeviceChoice {
    const KIND: &'static str = "device";
    const ALL: &'static [Self] = &[Self::Auto, Self::Cpu, Self::Gpu];
    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Gpu => &["wgpu"],
            _ => &[],
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::choice::parse(s)
    }
}

/// Which burn backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's flex CPU backend.
    Flex,
    /// burn's wgpu backend (Vulkan, Metal, DX12).
    Wgpu,
}

/// A ready device and a line describing it for the user.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub device: Device,
    pub backend: BackendKind,
    /// e.g. "CPU (burn flex, 2 threads)" or "GPU: NVIDIA H100 (Vulkan)".
    pub description: String,
    /// True when the wgpu adapter is a software rasteriser (lavapipe).
    pub software_adapter: bool,
    /// The wgpu instance, adapter, device and queue burn runs on, so a renderer can share
    /// them (the desktop app draws heatmaps with the same device). `None` on the CPU.
    pub wgpu_setup: Option<burn::tensor::wgpu::WgpuSetup>,
}

impl ComputeDevice {
    /// The CPU backend.
    pub fn cpu() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self {
            device: Device::flex(),
            backend: BackendKind::Flex,
            description: format!("CPU (burn flex, {threads} threads)"),
            software_adapter: false,
            wgpu_setup: None,
        }
    }

    /// A wgpu device, or an error saying why there is none.
    pub fn wgpu() -> Result<Self> {
        // wgpu may panic inside driver probing on broken setups; treat that as "no GPU".
        // The platform's native API only: probing OpenGL/EGL as well prints loader noise on
        // headless machines and is never the faster path.
        let init = std::panic::catch_unwind(|| {
            Device::wgpu_options()
                .graphics_api(native_graphics_api())
                .init_with_setup()
        });
        let (device, setup) = match init {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(TriscopeError::Device(format!("no wgpu adapter: {e}"))),
            Err(_) => return Err(TriscopeError::Device("wgpu initialisation panicked".into())),
        };
        let info = setup.adapter.get_info();
        let software_adapter = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
        let description = format!(
            "{}: {} ({:?}{})",
            if software_adapter {
                "software GPU"
            } else {
                "GPU"
            },
            info.name,
            info.backend,
            if software_adapter {
                ", runs on the CPU"
            } else {
                ""
            }
        );
        Ok(Self {
            device,
            backend: BackendKind::Wgpu,
            description,
            software_adapter,
            wgpu_setup: Some(setup),
        })
    }

    /// Resolve the user's choice.
    pub fn select(choice: DeviceChoice) -> Result<Self> {
        match choice {
            DeviceChoice::Cpu => Ok(Self::cpu()),
            DeviceChoice::Gpu => Self::wgpu(),
            DeviceChoice::Auto if !gpu_device_nodes_present() => {
                tracing::info!(
                    "no GPU device node (/dev/dri/renderD*, /dev/nvidia*); using the CPU backend"
                );
                Ok(Self::cpu())
            }
            DeviceChoice::Auto => match Self::wgpu() {
                Ok(gpu) if !gpu.software_adapter => Ok(gpu),
                Ok(soft) => {
                    tracing::info!(
                        "{} found; using the CPU backend, which is faster",
                        soft.description
                    );
                    Ok(Self::cpu())
                }
                Err(e) => {
                    tracing::info!("no GPU ({e}); using the CPU backend");
                    Ok(Self::cpu())
                }
            },
        }
    }

    /// True on a real GPU.
    pub fn is_gpu(&self) -> bool {
        self.backend == BackendKind::Wgpu && !self.software_adapter
    }
}
