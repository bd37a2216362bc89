//! The same model code on burn's wgpu backend. Without a GPU this runs on a software Vulkan
//! (Debian's mesa-vulkan-drivers / lavapipe), which CI installs and requires through
//! `TRISCOPE_REQUIRE_WGPU=1`. Elsewhere, with no Vulkan driver at all, the test says so and
//! passes without checking.

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use triscope::device::ComputeDevice;
use triscope::explain::{TargetClass, grad_cam};
use triscope::model::{LayerId, ModelConfig};
use triscope::weights::import_state_dict;

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
