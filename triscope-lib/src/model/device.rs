//! Compute devices: burn's wgpu backend on a GPU, burn's flex backend on the CPU.
//!
//! `auto` takes a real GPU through wgpu when there is one and the CPU otherwise. A software
//! Vulkan adapter (lavapipe, adapter type `Cpu`) counts as no GPU for `auto`: flex on the CPU
//! is ~75x faster than wgpu on lavapipe for a ResNet-50 forward. `gpu` takes any wgpu
//! adapter, software ones included (used by the tests that check the wgpu path without a GPU).

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};

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

impl crate::util::choice::Choice for DeviceChoice {
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
        crate::util::choice::parse(s)
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
