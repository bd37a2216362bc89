//! The same model code on burn's wgpu backend. Without a GPU this runs on a software Vulkan
//! (Debian's mesa-vulkan-drivers / lavapipe), which CI installs and requires through
//! `TRISCOPE_REQUIRE_WGPU=1`. Elsewhere, with no Vulkan driver at all, the test says so and
//! passes without checking.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use triscope::explain::{TargetClass, grad_cam};
use triscope::io::weights::import_state_dict;
use triscope::model::device::ComputeDevice;
use triscope::model::{LayerId, ModelConfig};

#[test]
fn wgpu_forward_and_gradcam_match_pytorch() {
    let gpu = match ComputeDevice::wgpu() {
        Ok(d) => d,
        Err(e) => {
            if std::env::var_os("TRISCOPE_REQUIRE_WGPU").is_some() {
                panic!("TRISCOPE_REQUIRE_WGPU is set but there is no wgpu adapter: {e}");
            }
            eprintln!(
                "skipping: no wgpu adapter ({e}); install mesa-vulkan-drivers to run this test"
            );
            return;
        }
    };
    eprintln!("wgpu device: {}", gpu.description);
    let fx = load_arrays(&fixture("parity_w8_c7.safetensors"));
    let mut config = ModelConfig::generic(7, 3);
    config.base_width = 8;
    config.resolution = 128;
    let load = |device: &Device| {
        import_state_dict(
            &fixture("resnet50_w8_c7.safetensors"),
            &config,
            None,
            device,
        )
        .unwrap()
        .valid()
    };
    let model = load(&gpu.device);
    // First image of the fixture batch only: shader compilation dominates on lavapipe.
    let input = fx["input"].item(0).to_vec();
    let x = Tensor::<4>::from_data(
        TensorData::new(input.clone(), [1, 3, 128, 128]),
        &gpu.device,
    );

    let logits = model
        .forward(x.clone())
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let d = max_rel_diff(&logits, fx["logits"].item(0));
    assert!(d <= 1e-3, "wgpu logits differ from PyTorch by {d}");

    let cam = grad_cam(&model, x, LayerId::Layer4, TargetClass::Predicted).unwrap();
    let want = fx["gradcam_layer4_predicted"].item(0);
    let d = max_abs_diff(&cam.maps[0].map, want);
    assert!(
        d <= 1e-2,
        "wgpu Grad-CAM differs from pytorch-grad-cam by {d}"
    );

    // And the CPU backend agrees with the GPU one on the same weights.
    let cpu = Device::flex();
    let cpu_logits = load(&cpu)
        .forward(Tensor::<4>::from_data(
            TensorData::new(input, [1, 3, 128, 128]),
            &cpu,
        ))
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    assert!(max_rel_diff(&logits, &cpu_logits) <= 1e-3);
}

#[test]
fn gpu_check_runs_on_a_wgpu_adapter() {
    // `bench --gpu-check` (what tools/gpu_check.sh runs on a GPU machine), quick variant: the
    // parity lines within tolerance and the timed rows, on whatever adapter is here. (The
    // adapter is asked for in the child only: this process's other test holds its device.)
    let dir = TempDir::new("gpu-check");
    let json = dir.0.join("check.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .current_dir(root())
        .args([
            "--gpu-check",
            "--narrow-only",
            "--skip-train",
            "--runs",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .args(["--torch", "/nonexistent"])
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench --gpu-check failed: {stdout}");
    if stdout.contains("gpu-check: no wgpu adapter") {
        if std::env::var_os("TRISCOPE_REQUIRE_WGPU").is_some() {
            panic!("TRISCOPE_REQUIRE_WGPU is set but bench found no wgpu adapter: {stdout}");
        }
        eprintln!("skipping: no wgpu adapter");
        return;
    }
    let number_after = |key: &str| -> f64 {
        let at = stdout
            .find(key)
            .unwrap_or_else(|| panic!("no '{key}' in {stdout}"))
            + key.len();
        let text: String = stdout[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || ".e-+".contains(*c))
            .collect();
        text.parse()
            .unwrap_or_else(|_| panic!("'{text}' after '{key}'"))
    };
    assert!(number_after("logits") < 1e-4, "{stdout}");
    assert!(number_after("Grad-CAM layer4") < 1e-3, "{stdout}");
    assert!(number_after("differ by at most") < 1e-4, "{stdout}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("check.json")).unwrap();
    for operation in [
        "forward",
        "PGD-10",
        "live attack: first PGD step",
        "live attack: PGD-10 + both Grad-CAMs",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["operation"] == operation && r["median_secs"].as_f64().unwrap() > 0.0),
            "no '{operation}' row in {rows:?}"
        );
    }
}
