//! Attribution methods against pytorch-grad-cam and Captum on the fixture model
//! (`tools/make_attribution_fixtures.py`), plus hand-made checks where no reference exists.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use triscope::explain::attribution::eigen_projection;
use triscope::explain::{
    AttributionMap, AttributionOptions, IgQuadrature, Method, TargetClass, attribute,
    attribute_with,
};
use triscope::inference::Classifier;
use triscope::io::weights::import_state_dict;
use triscope::model::device::ComputeDevice;
use triscope::model::{LayerId, ModelConfig, ResNet50};

const RES: usize = 128;

fn fixture_model(device: &Device) -> ResNet50 {
    let mut c = ModelConfig::generic(7, 3);
    c.base_width = 8;
    c.resolution = RES;
    import_state_dict(&fixture("resnet50_w8_c7.safetensors"), &c, None, device)
        .expect("fixture weights import")
        .valid()
}

/// The two HAM10000 inputs of `parity_w8_c7.safetensors`, `[2, 3, 128, 128]` (or the first).
fn inputs(count: usize, device: &Device) -> Tensor<4> {
    let fx = load_arrays(&fixture("parity_w8_c7.safetensors"));
    let n = 3 * RES * RES;
    let values = fx["input"].values[..count * n].to_vec();
    Tensor::from_data(TensorData::new(values, [count, 3, RES, RES]), device)
}

fn reference() -> std::collections::HashMap<String, Array> {
    load_arrays(&fixture("attribution_w8_c7.safetensors"))
}

fn run(
    model: &ResNet50,
    x: Tensor<4>,
    method: Method,
    options: &AttributionOptions,
) -> Vec<AttributionMap> {
    attribute(model, x, method, TargetClass::Predicted, options).expect("attribution runs")
}

fn check_map(m: &AttributionMap) {
    assert_eq!((m.height, m.width), (RES, RES));
    assert_eq!(m.map.len(), RES * RES);
    assert!(
        m.map.iter().all(|v| (0.0..=1.0).contains(v)),
        "{}",
        m.method
    );
    let max = m.map.iter().copied().fold(0.0f32, f32::max);
    assert!(
        max > 0.99,
        "{}: min-max normalised map has max {max}",
        m.method
    );
}

#[test]
fn cam_family_matches_pytorch_grad_cam() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let fx = reference();
    let predicted: Vec<usize> = fx["predicted"].values.iter().map(|v| *v as usize).collect();
    let cases = [
        (Method::GradCamPlusPlus, LayerId::Layer4, "gradcampp"),
        (Method::GradCamPlusPlus, LayerId::Layer3, "gradcampp"),
        (Method::XGradCam, LayerId::Layer4, "xgradcam"),
        (Method::LayerCam, LayerId::Layer4, "layercam"),
        (Method::LayerCam, LayerId::Layer3, "layercam"),
        (Method::HiResCam, LayerId::Layer4, "hirescam"),
        (Method::ScoreCam, LayerId::Layer4, "scorecam"),
        (Method::ScoreCam, LayerId::Layer3, "scorecam"),
    ];
    for (method, layer, key) in cases {
        let options = AttributionOptions {
            layer,
            ..Default::default()
        };
        let maps = run(&model, inputs(2, &device), method, &options);
        let want = &fx[&format!("cam_{key}_{layer}")];
        for (b, m) in maps.iter().enumerate() {
            check_map(m);
            assert_eq!(m.class_index, predicted[b]);
            assert_eq!(m.layer, Some(layer));
            let d = max_abs_diff(&m.map, want.item(b));
            println!("{method} {layer} image {b}: max abs diff {d:.2e}");
            // The reference is stored as float16 (<= 2.5e-4 rounding on [0, 1]).
            assert!(d <= 1e-3, "{method} {layer} image {b}: max abs diff {d}");
        }
    }
}

#[test]
fn eigen_cam_matches_get_2d_projection_up_to_the_svd_sign() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let fx = reference();
    let taps = model.forward_taps(inputs(2, &device), None);
    for layer in [LayerId::Layer4, LayerId::Layer3] {
        let act = taps.layers[layer.index()].clone();
        let [_, k, h, w] = act.dims();
        let acts = act.into_data().try_into_vec_as::<f32>().unwrap();
        let want = &fx[&format!("eigencam_{layer}_projection")];
        let options = AttributionOptions {
            layer,
            ..Default::default()
        };
        let maps = run(&model, inputs(2, &device), Method::EigenCam, &options);
        for b in 0..2 {
            let ours = eigen_projection(&acts[b * k * h * w..(b + 1) * k * h * w], k, h * w);
            let theirs = want.item(b);
            let flipped: Vec<f32> = theirs.iter().map(|v| -v).collect();
            let same = max_rel_diff(&ours, theirs);
            let opposite = max_rel_diff(&ours, &flipped);
            println!(
                "eigencam {layer} image {b}: projection rel diff {:.2e} (numpy's sign {})",
                same.min(opposite),
                if same < opposite {
                    "agrees"
                } else {
                    "is flipped"
                }
            );
            assert!(
                same.min(opposite) <= 1e-3,
                "{layer} image {b}: projection differs by {same} / {opposite} (flipped)"
            );
            // The final map equals pytorch-grad-cam's post-processing of the sign-aligned
            // projection; where numpy's sign agrees, it is EigenCAM's own output.
            check_map(&maps[b]);
            let d = max_abs_diff(
                &maps[b].map,
                fx[&format!("eigencam_{layer}_aligned")].item(b),
            );
            println!("eigencam {layer} image {b}: aligned map max abs diff {d:.2e}");
            assert!(d <= 1e-3, "{layer} image {b}: aligned map differs by {d}");
            if same < opposite {
                let d = max_abs_diff(&maps[b].map, fx[&format!("cam_eigencam_{layer}")].item(b));
                println!("eigencam {layer} image {b}: EigenCAM map max abs diff {d:.2e}");
                assert!(d <= 1e-3, "{layer} image {b}: EigenCAM map differs by {d}");
            }
        }
    }
}

/// max |a - b| relative to max |b|, for attributions stored as float16 (relative rounding
/// 4.9e-4 of each value).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    max_rel_diff(a, b)
}

#[test]
fn integrated_gradients_match_captum() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let fx = reference();
    let maps = run(
        &model,
        inputs(2, &device),
        Method::IntegratedGradients,
        &AttributionOptions::default(),
    );
    let want = &fx["ig_steps50"];
    for (b, m) in maps.iter().enumerate() {
        check_map(m);
        assert_eq!(m.raw_shape, vec![3, RES, RES]);
        let reference = want.item(b);
        // The untrained fixture model's logit is rough along the path from black: PyTorch's
        // own float32 IG is this far from its float64 IG; we cannot be much closer.
        let torch_own = fx["ig_torch_f32_vs_f64"].values[b];
        let tolerance = (3.0 * torch_own).max(5e-3);
        let d = rel(&m.raw, reference);
        let mean_abs_ref = reference.iter().map(|v| v.abs()).sum::<f32>() / reference.len() as f32;
        let mean_d = mean_abs_diff(&m.raw, reference) / mean_abs_ref;
        println!(
            "IG gausslegendre 50 image {b}: max diff / max |attr| {d:.2e} (PyTorch f32 vs f64: \
             {torch_own:.2e}), mean diff / mean |attr| {mean_d:.2e}"
        );
        assert!(d <= tolerance, "IG image {b}: {d} > {tolerance}");
        assert!(mean_d <= 2e-2, "IG image {b}: mean relative diff {mean_d}");
    }
    // A different quadrature is further away than the tolerance: the test can tell them apart.
    let trap = fx["ig_trapezoid_steps32"].item(0);
    let apart = rel(trap, want.item(0));
    println!("Captum trapezoid-32 vs gausslegendre-50: {apart:.2e}");
    assert!(apart > 3.0 * fx["ig_torch_f32_vs_f64"].values[0]);

    let options = AttributionOptions {
        ig_steps: 32,
        ig_quadrature: IgQuadrature::Trapezoid,
        ..Default::default()
    };
    let m = &run(
        &model,
        inputs(1, &device),
        Method::IntegratedGradients,
        &options,
    )[0];
    let d = rel(&m.raw, trap);
    println!("IG trapezoid 32 image 0: max diff / max |attr| {d:.2e}");
    assert!(
        d <= (3.0 * fx["ig_torch_f32_vs_f64"].values[0]).max(5e-3),
        "IG trapezoid: {d}"
    );
}

#[test]
fn integrated_gradients_are_complete() {
    // Completeness: sum of attributions = logit(x) - logit(black), up to the quadrature error.
    // On the fixture model Captum's convergence delta for the same call is the reference.
    let device = Device::flex();
    let model = fixture_model(&device);
    let fx = reference();
    let black_logits = |model: &ResNet50| {
        let black = Tensor::<4>::zeros([1, 3, RES, RES], &device);
        model
            .forward(black)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    let black = black_logits(&model);
    let maps = run(
        &model,
        inputs(2, &device),
        Method::IntegratedGradients,
        &AttributionOptions::default(),
    );
    for (b, m) in maps.iter().enumerate() {
        let c = m.class_index;
        let gap = m.logits[c] - black[c];
        let sum: f32 = m.raw.iter().sum();
        let delta = sum - gap;
        let (captum, f64_delta) = (fx["ig_delta"].values[b], fx["ig_delta_f64"].values[b]);
        println!(
            "IG image {b}: logit gap {gap:.4}, sum {sum:.4}, delta {delta:.4}, Captum's delta \
             {captum:.4} (float64 {f64_delta:.4})"
        );
        assert!(
            (delta - captum).abs() <= 1e-2 * gap.abs().max(captum.abs()).max(1.0),
            "image {b}: delta {delta} vs Captum's {captum}"
        );
    }
    // The trained embedded model's IG converges to its completeness gap, slowly (each ReLU
    // switching on the path is a kink): measured 5.5% of the gap at 256 steps, 0.8% at 1024.
    let classifier = Classifier::load(None, ComputeDevice::cpu()).unwrap();
    let embedded = classifier.model();
    let black = black_logits(embedded);
    let mut deltas = Vec::new();
    for steps in [4, 64, 1024] {
        let options = AttributionOptions {
            ig_steps: steps,
            ..Default::default()
        };
        let m = &run(
            embedded,
            inputs(1, &device),
            Method::IntegratedGradients,
            &options,
        )[0];
        let gap = m.logits[m.class_index] - black[m.class_index];
        deltas.push((steps, m.raw.iter().sum::<f32>() - gap, gap));
    }
    println!("embedded model, IG (steps, delta, logit gap): {deltas:?}");
    assert!(deltas[2].1.abs() < deltas[0].1.abs(), "{deltas:?}");
    assert!(deltas[2].1.abs() <= 0.05 * deltas[2].2.abs(), "{deltas:?}");
}

#[test]
fn saliency_matches_captum() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let fx = reference();
    let m = &run(
        &model,
        inputs(1, &device),
        Method::Saliency,
        &AttributionOptions::default(),
    )[0];
    check_map(m);
    let d = rel(&m.raw, fx["saliency"].item(0));
    let torch_own = fx["saliency_torch_f32_vs_f64"].values[0];
    let tolerance = (3.0 * torch_own).max(2e-3);
    println!(
        "saliency image 0: max diff / max |grad| {d:.2e} (PyTorch f32 vs f64: {torch_own:.2e})"
    );
    assert!(d <= tolerance, "saliency: {d} > {tolerance}");
    // The map is the channel max of |grad|.
    let plane = RES * RES;
    let p = (0..plane)
        .max_by(|&i, &j| m.map[i].total_cmp(&m.map[j]))
        .unwrap();
    let max_grad = m.raw.iter().copied().fold(0.0f32, f32::max);
    let at_p = (0..3).map(|c| m.raw[c * plane + p]).fold(0.0f32, f32::max);
    assert_eq!(at_p, max_grad);
}

#[test]
fn occlusion_matches_captum() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let fx = reference();
    for (window, stride, key) in [(16, 8, "occlusion_w16_s8"), (20, 12, "occlusion_w20_s12")] {
        let options = AttributionOptions {
            occlusion_window_px: window,
            occlusion_stride_px: stride,
            batch_size: 32,
            ..Default::default()
        };
        let m = &run(&model, inputs(1, &device), Method::Occlusion, &options)[0];
        check_map(m);
        let d = rel(&m.raw, fx[key].item(0));
        println!("occlusion {window}/{stride} image 0: max diff / max |attr| {d:.2e}");
        assert!(d <= 5e-3, "occlusion {window}/{stride}: {d}");
    }
}

#[test]
fn occluding_the_whole_image_gives_the_logit_drop_to_black() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let options = AttributionOptions {
        occlusion_window_px: RES,
        occlusion_stride_px: RES,
        ..Default::default()
    };
    let m = &attribute(
        &model,
        inputs(1, &device),
        Method::Occlusion,
        TargetClass::Index(4),
        &options,
    )
    .unwrap()[0];
    let black = Tensor::<4>::zeros([1, 3, RES, RES], &device);
    let black_logits = model
        .forward(black)
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let drop = m.logits[4] - black_logits[4];
    assert!(
        m.raw
            .iter()
            .all(|v| (v - drop).abs() <= 1e-4 * drop.abs().max(1.0))
    );
}

#[test]
fn gradcam_and_hirescam_agree_on_layer4_of_a_pooled_head() {
    // Global average pooling follows layer4, so d logit / d A is constant over positions and
    // HiResCAM (element-wise) equals Grad-CAM (spatial mean); XGrad-CAM's weights equal the
    // same constant gradient up to its 1e-7 eps.
    let device = Device::flex();
    let model = fixture_model(&device);
    let options = AttributionOptions::default();
    let grad = run(&model, inputs(2, &device), Method::GradCam, &options);
    for method in [Method::HiResCam, Method::XGradCam] {
        let other = run(&model, inputs(2, &device), method, &options);
        for (a, b) in grad.iter().zip(&other) {
            let d = max_abs_diff(&a.map, &b.map);
            assert!(d <= 1e-4, "{method} vs Grad-CAM: {d}");
        }
    }
    // On layer3 they differ (the gradient varies over positions).
    let l3 = AttributionOptions {
        layer: LayerId::Layer3,
        ..Default::default()
    };
    let a = run(&model, inputs(1, &device), Method::GradCam, &l3);
    let b = run(&model, inputs(1, &device), Method::HiResCam, &l3);
    assert!(max_abs_diff(&a[0].map, &b[0].map) > 0.05);
}

#[test]
fn smoothgrad_is_seeded_and_reduces_to_saliency_without_noise() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let x = inputs(1, &device);
    let sal = &run(&model, x.clone(), Method::Saliency, &Default::default())[0];
    let quiet = AttributionOptions {
        smoothgrad_samples: 3,
        smoothgrad_sigma: 0.0,
        ..Default::default()
    };
    let sg0 = &run(&model, x.clone(), Method::SmoothGrad, &quiet)[0];
    let d = max_rel_diff(&sg0.raw, &sal.raw);
    assert!(d <= 1e-5, "SmoothGrad with sigma 0 vs saliency: {d}");

    let noisy = |seed| AttributionOptions {
        smoothgrad_samples: 4,
        smoothgrad_sigma: 0.15,
        smoothgrad_seed: seed,
        batch_size: 3, // uneven chunks
        ..Default::default()
    };
    let a = &run(&model, x.clone(), Method::SmoothGrad, &noisy(1))[0];
    let b = &run(&model, x.clone(), Method::SmoothGrad, &noisy(1))[0];
    let c = &run(&model, x.clone(), Method::SmoothGrad, &noisy(2))[0];
    check_map(a);
    assert_eq!(a.raw, b.raw, "same seed, same map");
    assert!(
        max_rel_diff(&a.raw, &c.raw) > 1e-2,
        "another seed, another map"
    );
    assert!(
        max_rel_diff(&a.raw, &sal.raw) > 1e-2,
        "noise changes the gradient"
    );
    // Averaging smooths: the noisy average is less concentrated than one gradient.
    let peak = |v: &[f32]| {
        let max = v.iter().copied().fold(0.0f32, f32::max);
        max / (v.iter().sum::<f32>() / v.len() as f32)
    };
    println!(
        "peak/mean: saliency {:.1}, smoothgrad {:.1}",
        peak(&sal.raw),
        peak(&a.raw)
    );
}

#[test]
fn every_method_explains_a_fixed_class_and_rejects_bad_settings() {
    let device = Device::flex();
    let model = fixture_model(&device);
    let options = AttributionOptions {
        layer: LayerId::Layer4,
        ig_steps: 4,
        smoothgrad_samples: 2,
        occlusion_window_px: 32,
        occlusion_stride_px: 32,
        batch_size: 64,
        ..Default::default()
    };
    for method in Method::ALL {
        let maps = attribute(
            &model,
            inputs(2, &device),
            method,
            TargetClass::Index(4),
            &options,
        )
        .unwrap();
        assert_eq!(maps.len(), 2, "{method}");
        for m in &maps {
            check_map(m);
            assert_eq!(m.class_index, 4);
            assert_eq!(m.method, method);
            assert_eq!(m.layer.is_some(), method.uses_layer());
            let raw_len: usize = m.raw_shape.iter().product();
            assert_eq!(raw_len, m.raw.len());
        }
    }
    let err = |method, opts: &AttributionOptions, target| {
        attribute(&model, inputs(1, &device), method, target, opts)
            .unwrap_err()
            .to_string()
    };
    let e = err(Method::LayerCam, &options, TargetClass::Index(7));
    assert!(e.contains("class 7 does not exist"), "{e}");
    let bad = AttributionOptions {
        occlusion_window_px: 200,
        ..Default::default()
    };
    let e = err(Method::Occlusion, &bad, TargetClass::Predicted);
    assert!(e.contains("occlusion window"), "{e}");
    let bad = AttributionOptions {
        ig_steps: 1,
        ..Default::default()
    };
    let e = err(Method::IntegratedGradients, &bad, TargetClass::Predicted);
    assert!(e.contains("at least 2 steps"), "{e}");
}

#[test]
fn progress_counts_model_evaluations_and_cancel_stops() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let device = Device::flex();
    let model = fixture_model(&device);
    let options = AttributionOptions {
        ig_steps: 10,
        batch_size: 4,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let never = AtomicBool::new(false);
    attribute_with(
        &model,
        inputs(2, &device),
        Method::IntegratedGradients,
        TargetClass::Predicted,
        &options,
        &mut |done, total| seen.push((done, total)),
        &never,
    )
    .unwrap();
    // Two images x 10 steps in batches of 4, 4, 2.
    let done: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(done, vec![4, 8, 10, 14, 18, 20, 20]);
    assert!(seen.iter().all(|s| s.1 == 20));

    let cancel = AtomicBool::new(false);
    let mut calls = 0;
    let err = attribute_with(
        &model,
        inputs(1, &device),
        Method::ScoreCam,
        TargetClass::Predicted,
        &options,
        &mut |_, _| {
            calls += 1;
            cancel.store(true, Ordering::Relaxed);
        },
        &cancel,
    )
    .unwrap_err();
    assert!(matches!(err, triscope::TriscopeError::Cancelled), "{err}");
    assert_eq!(calls, 1, "stopped after the first batch");
}

/// Seconds per method for one image, on the fixture model (base width 8) and the embedded
/// model (base width 16), both at 128 px on the CPU. Run with
/// `cargo test --release --test attribution -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_each_method() {
    let device = Device::flex();
    let fixture = fixture_model(&device);
    let classifier = Classifier::load(None, ComputeDevice::cpu()).unwrap();
    let options = AttributionOptions::default();
    for (name, model) in [
        ("fixture w8", &fixture),
        ("embedded w16", classifier.model()),
    ] {
        for method in Method::ALL {
            let x = inputs(1, &device);
            let started = Instant::now();
            let m = attribute(model, x, method, TargetClass::Predicted, &options).unwrap();
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(m.len(), 1);
            println!("{name}: {:<22} {secs:>7.3} s", method.label());
        }
    }
}
