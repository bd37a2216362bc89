//! Training: losses against PyTorch, TRADES' inner loop, reproducible and resumable tiny runs,
//! controls, bad input.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::{fixture, load_arrays};
use triscope::attack::Classify;
use triscope::io::weights;
use triscope::model::ModelConfig;
use triscope::model::device::ComputeDevice;
use triscope::train::ema::{self, Ema};
use triscope::train::loader;
use triscope::train::loss::{self, InnerAttack};
use triscope::train::{CamMap, MetricsLine, TrainConfig, TrainControl, TrainEvent, Trainer};
use triscope::util::rng::SplitMix64;

fn fixture_model(device: &Device) -> triscope::model::ResNet50 {
    let mut config = ModelConfig::generic(7, 3);
    config.base_width = 8;
    config.resolution = 32;
    weights::import_state_dict(
        &fixture("resnet50_w8_c7.safetensors"),
        &config,
        None,
        device,
    )
    .unwrap()
}

fn tensor4(a: &common::Array, device: &Device) -> Tensor<4> {
    let s: [usize; 4] = a.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(a.values.clone(), s), device)
}

fn value(t: Tensor<1>) -> f32 {
    t.inner().into_data().try_into_vec_as::<f32>().unwrap()[0]
}

fn close(name: &str, got: f32, want: f32, rel: f32) {
    let tol = rel * want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol,
        "{name}: got {got}, PyTorch {want}"
    );
}

#[test]
fn losses_match_pytorch() {
    let f = load_arrays(&fixture("train_losses_w8_c7.safetensors"));
    let plain = Device::flex();
    let ad = plain.clone().autodiff();
    let labels: Vec<usize> = f["labels"].values.iter().map(|v| *v as usize).collect();
    let w = f["class_weights"].values.clone();
    let targets: Vec<Vec<f32>> = f["bce_targets"]
        .values
        .chunks(7)
        .map(|c| c.to_vec())
        .collect();

    // Inference mode.
    let eval = fixture_model(&plain);
    let logits = eval.forward(tensor4(&f["x"], &plain));
    close(
        "ce_eval",
        value(loss::cross_entropy(logits, &labels, None, 0.0)),
        f["ce_eval"].values[0],
        1e-3,
    );

    // Training mode (batch statistics): each check on a fresh copy of the network.
    let train = fixture_model(&ad);
    let logits = train.forward(tensor4(&f["x"], &ad));
    close(
        "ce_train_weighted",
        value(loss::cross_entropy(logits.clone(), &labels, Some(&w), 0.0)),
        f["ce_train_weighted"].values[0],
        1e-3,
    );
    close(
        "bce_train_weighted",
        value(loss::binary_cross_entropy(logits, &targets, Some(&w))),
        f["bce_train_weighted"].values[0],
        1e-3,
    );

    let train = fixture_model(&ad);
    let (parts, _, _) = loss::trades_outer(
        &train,
        tensor4(&f["x"], &ad),
        tensor4(&f["trades_x_adv"], &ad),
        &labels,
        None,
        0.0,
        6.0,
    );
    close(
        "trades_natural",
        value(parts.natural.clone()),
        f["trades_natural"].values[0],
        1e-3,
    );
    close(
        "trades_robust",
        value(parts.robust.clone().unwrap()),
        f["trades_robust"].values[0],
        2e-3,
    );
    close(
        "trades_total",
        value(parts.total.clone()),
        f["trades_total"].values[0],
        1e-3,
    );
    // The gradient flows through both branches as in PyTorch.
    let grads = parts.total.backward();
    let g = train.fc.weight.val().grad(&grads).unwrap(); // burn layout [in, out]
    let g: Vec<f32> = g.transpose().into_data().try_into_vec_as::<f32>().unwrap(); // [out, in]
    let want = &f["trades_grad_fc_weight"].values;
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = g
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 5e-3 * scale,
        "fc gradient differs by {worst} (scale {scale})"
    );

    let train = fixture_model(&ad);
    let logits = train.forward(tensor4(&f["pgd_x_adv"], &ad));
    close(
        "pgd_at_loss",
        value(loss::cross_entropy(logits, &labels, None, 0.0)),
        f["pgd_at_loss"].values[0],
        1e-3,
    );
}

#[test]
fn cam_mask_penalty_matches_pytorch() {
    // tools/make_cam_mask_fixture.py: the share of the label's layer4 CAM outside the lesion
    // on 3 images at 48 px (2x2 map), training mode, and its gradient, with the map made
    // positive by ReLU (the default) and by softplus.
    let f = load_arrays(&fixture("cam_mask_w8_c7.safetensors"));
    let ad = Device::flex().autodiff();
    let labels: Vec<usize> = f["labels"].values.iter().map(|v| *v as usize).collect();
    for (positive, suffix) in [(CamMap::Relu, ""), (CamMap::Softplus, "_softplus")] {
        let train = fixture_model(&ad);
        let taps = train.forward_taps(tensor4(&f["x"], &ad), None);
        let [_, _, _, l4] = taps.layers;
        let [b, _, rows, cols] = l4.dims();
        assert_eq!((b, rows, cols), (3, 2, 2));
        let cells = loss::cell_shares(&f["masks"].values, b, (48, 48), (rows, cols));
        let inside = Tensor::<3>::from_data(TensorData::new(cells, [b, rows, cols]), &ad);
        let share = loss::cam_outside_share(l4, train.fc.weight.val(), &labels, inside, positive);
        let want_share = f[&format!("share{suffix}")].values[0];
        close(
            &format!("share{suffix}"),
            value(share.clone()),
            want_share,
            1e-3,
        );
        let grads = share.backward();
        let fc: Vec<f32> = train
            .fc
            .weight
            .val()
            .grad(&grads)
            .unwrap()
            .transpose()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap(); // [out, in]
        let conv3: Vec<f32> = train.layer4[2]
            .conv3
            .weight
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        for (name, got) in [
            ("grad_fc_weight", fc),
            ("grad_layer4_2_conv3_weight", conv3),
        ] {
            let name = format!("{name}{suffix}");
            let want = &f[&name].values;
            assert_eq!(got.len(), want.len(), "{name}");
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                scale > 0.0 && worst <= 5e-3 * scale,
                "{name} differs by {worst} (scale {scale})"
            );
        }
    }
}

#[test]
fn lesion_shares_of_cells_average_the_mask() {
    // Two 4x6 masks on a 2x3 grid: each cell averages its 2x2 pixels. An uneven split (5 rows
    // on 2 cells) puts row y in cell floor(y * 2 / 5).
    let mut masks = vec![0.0f32; 2 * 24];
    masks[0] = 1.0; // image 0, pixel (0, 0): cell (0, 0) a quarter lesion
    for v in &mut masks[24..] {
        *v = 1.0; // image 1 all lesion
    }
    let cells = loss::cell_shares(&masks, 2, (4, 6), (2, 3));
    assert_eq!(
        cells,
        [0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    );
    let cells = loss::cell_shares(&[1.0, 1.0, 1.0, 0.0, 0.0], 1, (5, 1), (2, 1));
    assert_eq!(
        cells,
        [1.0, 0.0],
        "rows 0-2 in the first cell, 3-4 in the second"
    );
}

#[test]
fn trades_inner_loop_stays_in_the_ball_and_raises_the_kl() {
    let f = load_arrays(&fixture("train_losses_w8_c7.safetensors"));
    let plain = Device::flex();
    // In inference mode, as `trades_adversarial` requires (the reference calls model.eval()):
    // otherwise its autodiff forwards would use batch statistics and move the running ones.
    let model = fixture_model(&plain).valid();
    let x = tensor4(&f["x"], &plain);
    let attack = InnerAttack {
        eps_linf: 8.0 / 255.0,
        steps: 5,
        alpha: 2.0 / 255.0,
    };
    let adv = loss::trades_adversarial(&model, &x, &attack, &mut SplitMix64::new(1)).unwrap();
    let xs: Vec<f32> = x.clone().into_data().try_into_vec_as::<f32>().unwrap();
    let advs: Vec<f32> = adv.clone().into_data().try_into_vec_as::<f32>().unwrap();
    for (a, b) in advs.iter().zip(&xs) {
        assert!((0.0..=1.0).contains(a), "{a} outside [0, 1]");
        assert!((a - b).abs() <= 8.0 / 255.0 + 1e-6, "{a} vs {b}");
    }
    let kl = |other: Tensor<4>| {
        value(loss::kl_batchmean(
            model.logits(x.clone()),
            model.logits(other),
        ))
    };
    // Better than the start and than a random corner of the same ball.
    let k0 = kl(x.clone() + 0.001);
    let mut rng = SplitMix64::new(9);
    let corner: Vec<f32> = xs
        .iter()
        .map(|v| (v + if rng.next_f32() < 0.5 { -8.0 } else { 8.0 } / 255.0).clamp(0.0, 1.0))
        .collect();
    let corner = Tensor::<4>::from_data(TensorData::new(corner, x.dims()), &plain);
    let k_random = kl(corner);
    let k1 = kl(adv);
    assert!(
        k1 > k0 && k1 > k_random,
        "KL start {k0}, random {k_random}, TRADES {k1}"
    );
}

// ---------------------------------------------------------------------------------------
// Tiny runs on tests/fixtures/train_tiny (2 classes, 24 train / 8 val images of 32x32).

fn tiny_config(loss_type: &str, epochs: usize, extra: &[&str]) -> TrainConfig {
    let mut sets: Vec<String> = vec![
        "architecture.base_width=4".into(),
        "input.resolution=32".into(),
        format!("training.epochs={epochs}"),
        "training.batch_size=8".into(),
        "training.lr=0.05".into(),
        "training.warmup_epochs=1".into(),
        "training.seed=3".into(),
        format!("robustness.loss_type={loss_type}"),
        "robustness.attack.steps=2".into(),
        "robustness.val_robust_samples=4".into(),
        format!("data.root={}", fixture("train_tiny").display()),
        "data.dataset=tiny".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::from_yaml("", Path::new("tiny.yaml"), &sets).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("triscope-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn train(config: TrainConfig, dir: &Path) -> Vec<TrainEvent> {
    let trainer = Trainer::new(config, dir, ComputeDevice::cpu()).unwrap();
    let control = TrainControl::new();
    let mut events = Vec::new();
    trainer.run(&control, &mut |e| events.push(e)).unwrap();
    events
}

/// metrics.jsonl without the wall-clock fields.
fn metrics_without_times(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let _: MetricsLine = serde_json::from_str(l).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in [
                "images_per_s",
                "elapsed_s",
                "epoch_time_s",
                "explanation_time_s",
            ] {
                o.remove(k);
            }
            v
        })
        .collect()
}

fn weights_of(path: &Path) -> BTreeMap<String, Vec<f32>> {
    tensors_of(
        &weights::load_checkpoint(path, &Device::flex())
            .unwrap()
            .model,
    )
}

/// Every tensor of `model` by its torchvision key.
fn tensors_of(model: &triscope::model::ResNet50) -> BTreeMap<String, Vec<f32>> {
    model
        .named_tensors()
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.values))
        .collect()
}

/// `training.freeze_backbone`: after a run, only `fc` moved; every other weight and every
/// BatchNorm statistic is the initial one, bit for bit, whatever the loss.
#[test]
fn a_frozen_backbone_trains_the_head_only() {
    for loss_type in ["clean", "pgd_at", "trades"] {
        let dir = temp_dir(&format!("frozen-{loss_type}"));
        let config = tiny_config(loss_type, 1, &["training.freeze_backbone=true"]);
        train(config, &dir);
        let last = dir.join("last.safetensors");
        let model_config = weights::load_checkpoint(&last, &Device::flex())
            .unwrap()
            .model
            .config;
        let init = tensors_of(
            &triscope::model::ResNet50::init(&model_config, 3, &Device::flex()).unwrap(),
        );
        let trained = weights_of(&last);
        assert_eq!(init.len(), trained.len());
        for (key, values) in &trained {
            if key.starts_with("fc.") {
                assert_ne!(values, &init[key], "{loss_type}: {key} was trained");
            } else {
                assert_eq!(values, &init[key], "{loss_type}: {key} stayed");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn same_config_and_seed_give_identical_runs() {
    let (a, b) = (temp_dir("repro-a"), temp_dir("repro-b"));
    let config = tiny_config("pgd_at", 2, &[]);
    let events = train(config.clone(), &a);
    train(config, &b);
    let ma = metrics_without_times(&a);
    assert_eq!(ma, metrics_without_times(&b));
    // 3 steps per epoch, 2 epochs: 6 step lines and 2 epoch lines.
    assert_eq!(ma.len(), 8, "{ma:?}");
    assert_eq!(
        weights_of(&a.join("last.safetensors")),
        weights_of(&b.join("last.safetensors"))
    );
    assert!(a.join("best.safetensors").is_file() && a.join("config.yaml").is_file());
    // Training changed the weights, and the events cover the run.
    let init = triscope::model::ResNet50::init(
        &weights::load_checkpoint(&a.join("last.safetensors"), &Device::flex())
            .unwrap()
            .model
            .config,
        3,
        &Device::flex(),
    )
    .unwrap();
    let init = tensors_of(&init);
    assert_ne!(init, weights_of(&a.join("last.safetensors")));
    assert!(matches!(events.first(), Some(TrainEvent::Started(_))));
    assert!(matches!(events.last(), Some(TrainEvent::Finished(_))));
    let epochs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Epoch(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(epochs.len(), 2);
    assert!(epochs[0].val_robust_acc.is_some() && epochs[0].train_robust_acc.is_some());
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// Runs `trainer` until step `step` has begun, then aborts it as a kill would (no checkpoint
/// at the stop).
fn abort_at_step(trainer: Trainer, step: usize) {
    let control = TrainControl::new();
    let c = control.clone();
    let err = trainer
        .run(&control, &mut |e| {
            if let TrainEvent::Step(s) = &e
                && s.step == step
            {
                c.abort();
            }
        })
        .unwrap_err();
    assert!(matches!(err, triscope::TriscopeError::Cancelled), "{err}");
}

#[test]
fn resume_after_a_kill_matches_the_uninterrupted_run() {
    let full = temp_dir("resume-full");
    let killed = temp_dir("resume-killed");
    let stopped = temp_dir("resume-stopped");
    let config = tiny_config("trades", 3, &["training.checkpoint_every_steps=2"]);
    train(config.clone(), &full);

    // Killed during step 5 (epoch 2): the last checkpoint is from step 4, and the log has a
    // line for step 5 that the resume must cut.
    abort_at_step(
        Trainer::new(config.clone(), &killed, ComputeDevice::cpu()).unwrap(),
        5,
    );
    let resumed = Trainer::resume(&killed, ComputeDevice::cpu()).unwrap();
    let mut events = Vec::new();
    resumed
        .run(&TrainControl::new(), &mut |e| events.push(e))
        .unwrap();
    match events.first() {
        Some(TrainEvent::Started(info)) => {
            assert!(info.resumed);
            assert_eq!(info.start_step, 4);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(metrics_without_times(&full), metrics_without_times(&killed));
    assert_eq!(
        weights_of(&full.join("last.safetensors")),
        weights_of(&killed.join("last.safetensors"))
    );

    // Stopped (mid-epoch checkpoint written at the stop) and resumed.
    let trainer = Trainer::new(config, &stopped, ComputeDevice::cpu()).unwrap();
    let control = TrainControl::new();
    let c = control.clone();
    let summary = trainer
        .run(&control, &mut |e| {
            if let TrainEvent::Step(s) = &e
                && s.step == 7
            {
                c.stop();
            }
        })
        .unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.steps_done, 7);
    Trainer::resume(&stopped, ComputeDevice::cpu())
        .unwrap()
        .run(&TrainControl::new(), &mut |_| {})
        .unwrap();
    assert_eq!(
        metrics_without_times(&full),
        metrics_without_times(&stopped)
    );
    assert_eq!(
        weights_of(&full.join("last.safetensors")),
        weights_of(&stopped.join("last.safetensors"))
    );
    for d in [full, killed, stopped] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A run of `config` in `killed`, killed during step 5 and resumed, ends as the uninterrupted
/// run in `full` did: the same metrics and weights, bit for bit.
fn killed_at_step_5_resumes_as(config: TrainConfig, killed: &Path, full: &Path) {
    abort_at_step(
        Trainer::new(config, killed, ComputeDevice::cpu()).unwrap(),
        5,
    );
    Trainer::resume(killed, ComputeDevice::cpu())
        .unwrap()
        .run(&TrainControl::new(), &mut |_| {})
        .unwrap();
    assert_eq!(metrics_without_times(full), metrics_without_times(killed));
    assert_eq!(
        weights_of(&full.join("last.safetensors")),
        weights_of(&killed.join("last.safetensors"))
    );
}

/// The loss of each step line.
fn step_losses(dir: &Path) -> Vec<f64> {
    metrics_without_times(dir)
        .iter()
        .filter(|l| l["type"] == "step")
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn bf16_training_tracks_f32_and_resumes_bit_exactly() {
    if !triscope::model::fast::bf16::supported() {
        eprintln!("skipped: this CPU has no AVX512_BF16");
        return;
    }
    let (f32_run, full, killed) = (temp_dir("f32"), temp_dir("bf16"), temp_dir("bf16-killed"));
    let sets = [
        "training.checkpoint_every_steps=2",
        "architecture.base_width=16",
        "input.resolution=64",
        "training.lr=0.002",
    ];
    train(tiny_config("clean", 3, &sets), &f32_run);
    let bf16_sets = [&sets[..], &["training.precision=bf16"]].concat();
    let config = tiny_config("clean", 3, &bf16_sets);
    let events = train(config.clone(), &full);
    match events.first() {
        Some(TrainEvent::Started(info)) => assert!(info.device.ends_with("bf16 products")),
        other => panic!("{other:?}"),
    }
    // The first step's loss (the same initial weights and batch: only the forward's rounding
    // differs) within 5% (measured 3%: a randomly initialised ResNet-50 amplifies rounding
    // layer by layer), and not equal (bf16 ran).
    let (a, b) = (step_losses(&f32_run), step_losses(&full));
    assert_eq!(a.len(), 9);
    assert!(
        a[0] != b[0] && (a[0] - b[0]).abs() <= 0.05 * a[0],
        "{a:?} vs {b:?}"
    );
    // After 9 steps the bf16 weights are near the f32 ones compared to how far training moved
    // them (measured 0.18; a wrong gradient would leave them as far apart as they moved).
    let f32_weights = weights_of(&f32_run.join("last.safetensors"));
    let bf16_weights = weights_of(&full.join("last.safetensors"));
    let model_config = weights::load_checkpoint(&full.join("last.safetensors"), &Device::flex())
        .unwrap()
        .model
        .config;
    let init = triscope::model::ResNet50::init(&model_config, 3, &Device::flex()).unwrap();
    let init = tensors_of(&init);
    let distance = |x: &BTreeMap<String, Vec<f32>>, y: &BTreeMap<String, Vec<f32>>| {
        let squares = x.iter().flat_map(|(k, u)| u.iter().zip(&y[k]));
        squares
            .map(|(p, q)| ((p - q) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (moved, apart) = (
        distance(&f32_weights, &init),
        distance(&f32_weights, &bf16_weights),
    );
    assert!(
        apart <= 0.3 * moved,
        "bf16 {apart} from f32, which moved {moved} from the start"
    );
    // Killed during step 5, resumed: the same run, bit for bit.
    killed_at_step_5_resumes_as(config, &killed, &full);
    for d in [f32_run, full, killed] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn mixup_and_cutmix_change_the_run_and_resume_bit_exactly() {
    let mix = [
        "training.augmentation.mixup_alpha=0.4",
        "training.augmentation.cutmix_alpha=1.0",
        "training.checkpoint_every_steps=2",
    ];
    let plain = temp_dir("mix-plain");
    let full = temp_dir("mix-full");
    let killed = temp_dir("mix-killed");
    train(tiny_config("clean", 2, &mix[2..]), &plain);
    train(tiny_config("clean", 2, &mix), &full);
    // The mixing reaches the model: same seed, same batches, other weights.
    assert_ne!(
        weights_of(&plain.join("last.safetensors")),
        weights_of(&full.join("last.safetensors"))
    );
    // Killed during step 5; the resumed run draws the same mixes as the uninterrupted one.
    killed_at_step_5_resumes_as(tiny_config("clean", 2, &mix), &killed, &full);
    for d in [plain, full, killed] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `training.ema_decay`: `best` is the weight average that was validated (not the raw
/// weights; BatchNorm statistics recomputed), each epoch logs the raw weights' validation
/// beside it, and the average survives a kill and a resume bit for bit.
#[test]
fn the_weight_average_is_validated_kept_as_best_and_resumed_bit_exactly() {
    let sets = [
        "training.ema_decay=0.6",
        "training.checkpoint_every_steps=2",
    ];
    let one = temp_dir("ema-one");
    train(tiny_config("clean", 1, &sets), &one);
    let (header, blobs) = weights::read_extras(&one.join("last.safetensors")).unwrap();
    assert!(header.contains_key(triscope::train::TRAIN_STATE_KEY));
    let last = weights::load_checkpoint(&one.join("last.safetensors"), &Device::flex()).unwrap();
    let average = Ema::from_bytes(
        0.6,
        &blobs[triscope::train::EMA_KEY],
        ema::float_count(&last.model),
    )
    .unwrap();
    let averaged_model = average.apply(&last.model).unwrap();
    let averaged = tensors_of(&averaged_model);
    // One epoch: `best` is its end, the average of its steps, which is not the last step,
    // with its BatchNorm statistics recomputed (not the averaged ones) on the epoch's batches
    // augmented as in training: un-augmented ones give other statistics.
    let best = weights_of(&one.join("best.safetensors"));
    let running = |k: &String| k.contains("running_");
    assert_eq!(
        best.keys().collect::<Vec<_>>(),
        averaged.keys().collect::<Vec<_>>()
    );
    for (k, v) in &best {
        if !running(k) {
            assert_eq!(v, &averaged[k], "{k}");
        }
    }
    assert!(best.iter().any(|(k, v)| running(k) && v != &averaged[k]));
    let config = tiny_config("clean", 1, &sets);
    let t = &config.training;
    let train_split = std::sync::Arc::new(
        triscope::io::data::Dataset::open(&config.data.root, Some(&config.data.train_split))
            .unwrap(),
    );
    let batches: Vec<Vec<usize>> = loader::epoch_order(train_split.len(), t.seed, 0)
        .chunks(t.batch_size)
        .map(|c| c.to_vec())
        .collect();
    let recalibrated = |augment| {
        let spec = loader::LoaderSpec {
            channels: 3,
            resolution: config.input.resolution,
            augment,
            lesion_masks: None,
            with_lesion: false,
            workers: 1,
            prefetch: 1,
        };
        let batches = loader::Loader::spawn(train_split.clone(), batches.clone(), spec);
        tensors_of(&ema::recalibrate_batch_norm(&averaged_model, batches).unwrap())
    };
    let differing = |other: BTreeMap<String, Vec<f32>>| -> Vec<String> {
        best.keys()
            .filter(|k| best[*k] != other[*k])
            .cloned()
            .collect()
    };
    let augmented = differing(recalibrated(Some((t.augmentation.clone(), t.seed, 0))));
    assert!(augmented.is_empty(), "{augmented:?}");
    assert!(!differing(recalibrated(None)).is_empty());
    assert_ne!(best, weights_of(&one.join("last.safetensors")));
    let described = weights::load_checkpoint(&one.join("best.safetensors"), &Device::flex())
        .unwrap()
        .metadata
        .description;
    assert!(
        described.contains("weight average (decay 0.6)"),
        "{described}"
    );
    assert!(!last.metadata.description.contains("average"));
    let epochs: Vec<serde_json::Value> = metrics_without_times(&one)
        .into_iter()
        .filter(|l| l["type"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 1);
    assert!(epochs[0]["raw_val_balanced_acc"].is_f64(), "{}", epochs[0]);
    assert!(epochs[0]["raw_val_clean_acc"].is_f64(), "{}", epochs[0]);

    let full = temp_dir("ema-full");
    let killed = temp_dir("ema-killed");
    train(tiny_config("clean", 2, &sets), &full);
    abort_at_step(
        Trainer::new(
            tiny_config("clean", 2, &sets),
            &killed,
            ComputeDevice::cpu(),
        )
        .unwrap(),
        5,
    );
    Trainer::resume(&killed, ComputeDevice::cpu())
        .unwrap()
        .run(&TrainControl::new(), &mut |_| {})
        .unwrap();
    assert_eq!(metrics_without_times(&full), metrics_without_times(&killed));
    for file in ["last.safetensors", "best.safetensors"] {
        assert_eq!(
            weights_of(&full.join(file)),
            weights_of(&killed.join(file)),
            "{file}"
        );
    }
    for d in [one, full, killed] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn spawned_trainer_pauses_resumes_and_stops() {
    let dir = temp_dir("spawn");
    let config = tiny_config("clean", 50, &["training.augment=true"]);
    let handle = Trainer::new(config, &dir, ComputeDevice::cpu())
        .unwrap()
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut paused_at = None;
    for e in handle.events.iter() {
        match &e {
            TrainEvent::Step(s) if s.step == 2 => {
                handle.control.pause();
                paused_at = Some(std::time::Instant::now());
            }
            TrainEvent::Paused => {
                std::thread::sleep(std::time::Duration::from_millis(200));
                handle.control.resume();
            }
            TrainEvent::Step(s) if s.step == 4 => handle.control.stop(),
            _ => {}
        }
        seen.push(e);
    }
    let summary = handle.join().unwrap();
    assert!(paused_at.is_some());
    // Events are asynchronous: the trainer may run a few steps past the one that asked to
    // stop, but it stops long before its 150 steps, at a step boundary it reported.
    assert!(
        summary.stopped && summary.steps_done >= 4 && summary.steps_done < 150,
        "{summary:?}"
    );
    let last_step = seen
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(s.step),
            _ => None,
        })
        .max();
    assert_eq!(last_step, Some(summary.steps_done));
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            TrainEvent::Paused => "paused",
            TrainEvent::Resumed => "resumed",
            TrainEvent::Stopped { .. } => "stopped",
            _ => "",
        })
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(kinds, vec!["paused", "resumed", "stopped"]);
    assert!(dir.join("last.safetensors").is_file());
    // The stopped run's checkpoint is a normal model for the other commands.
    let m = weights::load_checkpoint(&dir.join("last.safetensors"), &Device::flex()).unwrap();
    assert_eq!(m.model.config.class_names, vec!["mel", "nv"]);
    assert_eq!(m.metadata.dataset.as_deref(), Some("tiny"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_loss_stops_the_run_and_keeps_the_checkpoint() {
    let dir = temp_dir("nan");
    let config = tiny_config(
        "clean",
        3,
        &[
            "training.lr=1e30",
            "training.warmup_epochs=0",
            "training.scheduler=constant",
            "training.checkpoint_every_steps=1",
        ],
    );
    let trainer = Trainer::new(config, &dir, ComputeDevice::cpu()).unwrap();
    let mut failed = None;
    let err = trainer
        .run(&TrainControl::new(), &mut |e| {
            if let TrainEvent::Failed(m) = e {
                failed = Some(m);
            }
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the loss became") && err.contains("epoch 1 step"),
        "{err}"
    );
    assert_eq!(failed.as_deref(), Some(err.as_str()));
    // The checkpoint of the last finite step is there and intact.
    let (header, blobs) = weights::read_extras(&dir.join("last.safetensors")).unwrap();
    assert!(header.contains_key(triscope::train::TRAIN_STATE_KEY));
    assert!(blobs.contains_key(triscope::train::OPTIMIZER_KEY));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The error of a run that must not start.
fn start_error(config: TrainConfig, run_dir: &Path) -> String {
    Trainer::new(config, run_dir, ComputeDevice::cpu())
        .err()
        .unwrap()
        .to_string()
}

#[test]
fn bad_runs_fail_with_clear_errors() {
    // Unwritable run folder (a path below a regular file).
    let file = temp_dir("blocker");
    std::fs::write(&file, b"x").unwrap();
    let err = start_error(tiny_config("clean", 1, &[]), &file.join("run"));
    assert!(
        err.contains("cannot write") && err.contains("blocker"),
        "{err}"
    );
    let _ = std::fs::remove_file(&file);

    // A class in the labels that the config does not declare.
    let err = start_error(
        tiny_config("clean", 1, &["classifier.class_names=[mel, bcc]"]),
        &temp_dir("undeclared"),
    );
    assert!(err.contains("'nv'"), "{err}");

    // Label smoothing on multi-label findings (BCE has no class to smooth towards).
    let nih = temp_dir("nih");
    std::fs::create_dir_all(nih.join("images")).unwrap();
    let mut csv = String::from("Image Index,Finding Labels,split\n");
    for (f, split) in [("00000032_037.png", "train"), ("00000072_000.png", "val")] {
        std::fs::copy(
            common::sample(&format!("nih-cxr14/{f}")),
            nih.join("images").join(f),
        )
        .unwrap();
        csv.push_str(&format!("{f},Cardiomegaly|Effusion,{split}\n"));
    }
    std::fs::write(nih.join("labels.csv"), csv).unwrap();
    let nih_sets = [
        format!("data.root={}", nih.display()),
        "data.dataset=nih-cxr14".into(),
        "input.channels=1".into(),
        "classifier.num_classes=14".into(),
        "training.label_smoothing=0.1".into(),
    ];
    let nih_sets: Vec<&str> = nih_sets.iter().map(String::as_str).collect();
    let err = start_error(tiny_config("clean", 1, &nih_sets), &temp_dir("nih-run"));
    assert!(
        err.contains("label_smoothing") && err.contains("multi-label"),
        "{err}"
    );
    // MixUp / CutMix likewise: they mix single-label classes.
    let mut mix_sets = nih_sets.clone();
    mix_sets.pop();
    mix_sets.push("training.augmentation.cutmix_alpha=1.0");
    let err = start_error(tiny_config("clean", 1, &mix_sets), &temp_dir("nih-mix"));
    assert!(
        err.contains("cutmix_alpha") && err.contains("multi-label"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&nih);

    // Resuming a folder without a run.
    let err = Trainer::resume(&temp_dir("empty"), ComputeDevice::cpu())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nothing to resume"), "{err}");
    let _ = AtomicBool::new(false);
}

#[test]
fn shipped_configs_parse() {
    let dir = common::root().join("configs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let path = dir.join(&name);
        // The data root may be absent (a checkout without ../shared): point it at a fixture.
        let root = format!("data.root={}", fixture("train_tiny").display());
        let c = TrainConfig::load(&path, &[root]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.training.epochs > 0);
    }
}

fn triscope(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(args)
        .output()
        .unwrap()
}

/// `triscope train --resume RUN --device cpu --quiet`.
fn resume_cli(run: &Path) -> std::process::Output {
    triscope(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ])
}

/// `DIR/tiny.yaml`: one clean epoch of the tiny fixture, for the command-line tests.
fn write_tiny_config(dir: &Path) -> PathBuf {
    let config = dir.join("tiny.yaml");
    std::fs::write(
        &config,
        format!(
            "architecture: {{base_width: 4}}\ninput: {{resolution: 32}}\n\
             training: {{epochs: 1, batch_size: 8, warmup_epochs: 0}}\n\
             robustness: {{loss_type: clean}}\ndata: {{dataset: tiny, root: {}}}\n",
            fixture("train_tiny").display()
        ),
    )
    .unwrap();
    config
}

/// `--precision bf16` where the CPU has no AVX512_BF16 (forced with `TRISCOPE_BF16=0`): the
/// run says so and trains in f32, exactly the f32 run; `--precision` with `--resume` is
/// refused (a run keeps its config's precision).
#[test]
fn cli_bf16_falls_back_to_f32_on_a_cpu_without_it() {
    let dir = temp_dir("cli-bf16");
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_tiny_config(&dir);
    let run = |name: &str, precision: &[&str], env: Option<&str>| {
        let out_dir = dir.join(name);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"));
        command.args(["train", "--config", config.to_str().unwrap(), "--out"]);
        command
            .arg(&out_dir)
            .args(["--device", "cpu", "--quiet"])
            .args(precision);
        if let Some(v) = env {
            command.env("TRISCOPE_BF16", v);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        (
            out_dir,
            String::from_utf8_lossy(&out.stdout).to_string(),
            stderr,
        )
    };
    let (f32_dir, ..) = run("f32", &[], None);
    let (refused, stdout, stderr) = run("refused", &["--precision", "bf16"], Some("0"));
    assert!(stderr.contains("running in f32"), "{stderr}");
    assert!(stdout.contains("done: 1 epochs"), "{stdout}");
    assert_eq!(
        metrics_without_times(&f32_dir),
        metrics_without_times(&refused)
    );
    // The run records what was asked for: resumed on a CPU with bf16, it would use it.
    let saved = std::fs::read_to_string(refused.join("config.yaml")).unwrap();
    assert!(saved.contains("precision: bf16"), "{saved}");
    let out = triscope(&[
        "train",
        "--resume",
        refused.to_str().unwrap(),
        "--precision",
        "f32",
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--precision with --resume"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_trains_resumes_and_rejects_bad_configs() {
    let dir = temp_dir("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_tiny_config(&dir);
    let run = dir.join("run");
    let (c, r) = (config.to_str().unwrap(), run.to_str().unwrap());
    let out = triscope(&[
        "train", "--config", c, "--out", r, "--device", "cpu", "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("done: 1 epochs"));
    // More epochs through --set, then resume: continues from epoch 2.
    let run2 = dir.join("run2");
    let r2 = run2.to_str().unwrap();
    let out = triscope(&[
        "train",
        "--config",
        c,
        "--set",
        "training.epochs=2",
        "--out",
        r2,
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = resume_cli(Path::new(r2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A finished run resumes to nothing new.
    assert!(String::from_utf8_lossy(&out.stdout).contains("done: 2 epochs"));
    // The same folder again is refused.
    let out = triscope(&["train", "--config", c, "--out", r, "--device", "cpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    // Unknown key, named with the file.
    let out = triscope(&[
        "train",
        "--config",
        c,
        "--set",
        "training.lr_max=1",
        "--out",
        r2,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lr_max") && err.contains("tiny.yaml"),
        "{err}"
    );
    let out = triscope(&[
        "train",
        "--config",
        c,
        "--set",
        "training.lr=-1",
        "--out",
        r2,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("training.lr"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CPU path never starts Vulkan (issue #16): `train`, `train --resume` (burn stages the
/// optimizer state on its default device, wgpu unless the binary makes it the CPU) and
/// `predict` with `--device cpu`. The Vulkan loader's debug output and, with XDG_RUNTIME_DIR
/// unset, Mesa's device-select layer would show any Vulkan start on stderr (CI installs
/// Mesa's Vulkan drivers; where no Vulkan loader is installed there is nothing to see).
#[test]
fn cpu_train_resume_and_predict_never_start_vulkan() {
    let dir = temp_dir("no-vulkan");
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_tiny_config(&dir);
    let run = dir.join("run");
    let (c, r) = (config.to_str().unwrap(), run.to_str().unwrap());
    let image = common::sample("ham10000/ISIC_0024410.jpg");
    let commands: [&[&str]; 3] = [
        &[
            "train", "--config", c, "--out", r, "--device", "cpu", "--quiet",
        ],
        &["train", "--resume", r, "--device", "cpu", "--quiet"],
        &["predict", image.to_str().unwrap(), "--device", "cpu"],
    ];
    for args in commands {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"))
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("BURN_DEVICE")
            .env("VK_LOADER_DEBUG", "all")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(
            !err.contains("Vulkan Loader") && !err.contains("XDG_RUNTIME_DIR"),
            "{args:?} started Vulkan:\n{}",
            err.lines().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny clean config in `dir` that writes a checkpoint after every step (so writes are a
/// large share of the run's time), and its uninterrupted run by the CLI in `dir/reference`.
fn every_step_run(dir: &Path) -> (PathBuf, PathBuf) {
    let config = dir.join("tiny.yaml");
    std::fs::write(
        &config,
        format!(
            "architecture: {{base_width: 4}}\ninput: {{resolution: 32}}\n\
             training: {{epochs: 3, batch_size: 8, warmup_epochs: 0, checkpoint_every_steps: 1, seed: 5}}\n\
             robustness: {{loss_type: clean}}\ndata: {{dataset: tiny, root: {}}}\n",
            fixture("train_tiny").display()
        ),
    )
    .unwrap();
    let reference = dir.join("reference");
    let out = triscope(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        reference.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (config, reference)
}

/// `triscope train --resume run` finishes the run with the metrics and weights of `reference`,
/// the same config run without interruption.
fn resume_to_the_end_as(run: &Path, reference: &Path) {
    let out = resume_cli(run);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metrics_without_times(run), metrics_without_times(reference));
    assert_eq!(
        weights_of(&run.join("last.safetensors")),
        weights_of(&reference.join("last.safetensors"))
    );
}

/// A `triscope train` child killed with SIGKILL while it writes a checkpoint, three times,
/// resumed each time: no checkpoint is ever torn, and the finished run has the metrics and
/// weights of a run never interrupted.
#[test]
fn sigkill_during_checkpoint_writes_then_resume_matches_an_uninterrupted_run() {
    let dir = temp_dir("sigkill");
    std::fs::create_dir_all(&dir).unwrap();
    let (config, reference) = every_step_run(&dir);
    let c = config.to_str().unwrap();

    let killed = dir.join("killed");
    let last = killed.join("last.safetensors");
    let mut kills_mid_write = 0;
    for round in 0..3 {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"));
        if round == 0 {
            cmd.args(["train", "--config", c, "--out", killed.to_str().unwrap()]);
        } else {
            cmd.args(["train", "--resume", killed.to_str().unwrap()]);
        }
        let mut child = cmd
            .args(["--device", "cpu", "--quiet"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let temp = killed.join(format!(".last.safetensors.tmp{}", child.id()));
        // Spin until this process is rewriting an existing `last` (its temporary file
        // exists), then kill.
        let writing = || temp.exists() && last.exists();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !writing() && std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::hint::spin_loop();
        }
        if writing() {
            kills_mid_write += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever the moment, `last` is whole: it loads, with its training state.
        assert!(last.is_file(), "round {round}: no last checkpoint");
        weights::load_checkpoint(&last, &Device::flex())
            .unwrap_or_else(|e| panic!("round {round}: torn checkpoint: {e}"));
    }
    assert!(
        kills_mid_write >= 1,
        "no kill landed during a checkpoint write"
    );
    resume_to_the_end_as(&killed, &reference);
    // The killed writers' temporary files are gone after the resume.
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One writer per run folder: while a trainer holds a run, a second one (in this process, or
/// `triscope train --resume` in another) stops at once naming the holder, and touches nothing;
/// once the holder is gone the resume goes ahead. (A holder killed with SIGKILL releases the
/// lock too: `sigkill_during_checkpoint_writes_then_resume_matches_an_uninterrupted_run`.)
#[test]
fn a_second_writer_is_refused_while_a_run_is_held() {
    let dir = temp_dir("locked");
    let config = tiny_config("clean", 2, &["training.checkpoint_every_steps=1"]);
    // One epoch of two, then a stop: the run has a `last` to resume.
    let trainer = Trainer::new(config.clone(), &dir, ComputeDevice::cpu()).unwrap();
    let control = TrainControl::new();
    let c = control.clone();
    trainer
        .run(&control, &mut |e| {
            if matches!(e, TrainEvent::Epoch(_)) {
                c.stop();
            }
        })
        .unwrap();
    let log_before = std::fs::read(dir.join("metrics.jsonl")).unwrap();

    let holder = Trainer::resume(&dir, ComputeDevice::cpu()).unwrap();
    let pid = format!("process {}", std::process::id());
    let second = Trainer::resume(&dir, ComputeDevice::cpu())
        .err()
        .expect("refused");
    assert!(
        matches!(second, triscope::TriscopeError::RunInUse { .. })
            && second.to_string().contains(&pid),
        "{second}"
    );
    let new = Trainer::new(config.clone(), &dir, ComputeDevice::cpu())
        .err()
        .expect("refused");
    assert!(new.to_string().contains("in use by"), "{new}");
    let out = resume_cli(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by") && stderr.contains(&pid),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.join("metrics.jsonl")).unwrap(),
        log_before
    );

    drop(holder);
    let out = resume_cli(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mounted for the test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where this process may not mount (not root, no CAP_SYS_ADMIN).
    fn mount(dir: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }

    fn resize(&self, bytes: u64) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The disk fills during a run: the run stops naming the file and the OS error, the last good
/// checkpoint is whole, an export onto the full disk fails the same way, and once there is
/// space again `--resume` finishes with the metrics and weights of a run that never stopped.
#[test]
fn a_full_disk_stops_the_run_and_resume_continues_once_space_is_back() {
    let dir = temp_dir("full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let (config, reference) = every_step_run(&dir);
    let c = config.to_str().unwrap();
    let checkpoint = std::fs::metadata(reference.join("last.safetensors"))
        .unwrap()
        .len();

    // Room for `last` and its rewrite, not for `best` beside them as well.
    let Some(disk) = Tmpfs::mount(&dir.join("disk"), checkpoint * 5 / 2) else {
        assert!(
            std::env::var_os("TRISCOPE_REQUIRE_TMPFS").is_none(),
            "TRISCOPE_REQUIRE_TMPFS is set but a tmpfs cannot be mounted here"
        );
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    };
    let run = disk.0.join("run");
    let out = triscope(&[
        "train",
        "--config",
        c,
        "--out",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(run.to_str().unwrap()),
        "the error names no file: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    weights::load_checkpoint(&run.join("last.safetensors"), &Device::flex())
        .expect("the last good checkpoint is whole");

    // Fill what is left, then export onto the full disk.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &[0u8; 4096]).is_ok() {}
    drop(f);
    let export = disk.0.join("export.safetensors");
    let last = run.join("last.safetensors");
    let out = triscope(&[
        "export",
        "--model",
        last.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") && stderr.contains("export.safetensors"),
        "{stderr}"
    );
    std::fs::remove_file(&filler).unwrap();

    disk.resize(checkpoint * 8);
    resume_to_the_end_as(&run, &reference);
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// HAM10000 layout: the seven bundled samples with their masks, five to train, two to validate.
fn ham_with_masks(name: &str) -> PathBuf {
    let root = temp_dir(name);
    common::ham_folder(&root, |i| if i < 5 { "train" } else { "val" }, true);
    root
}

#[test]
fn background_swap_keeps_each_lesion_and_puts_another_images_skin_around_it() {
    use triscope::io::imaging::ResizeMode;
    use triscope::io::regions::RegionSource;
    use triscope::train::augment::{AugmentParams, LESION_MARGIN_PX};

    let root = ham_with_masks("bg-swap-loader");
    let ds = std::sync::Arc::new(triscope::io::data::Dataset::open(&root, Some("train")).unwrap());
    let masks = RegionSource::for_dataset(&ds).unwrap().expect("masks");
    let (n, side) = (ds.len(), 48);
    let plane = side * side;
    // Geometry and colour left as they are, so what changes is the swap alone.
    let identity = AugmentParams {
        background_swap: 1.0,
        ..AugmentParams::identity()
    };
    let batch = |augment: Option<(AugmentParams, u64, usize)>, lesion_masks, with_lesion| {
        let spec = loader::LoaderSpec {
            channels: 3,
            resolution: side,
            augment,
            lesion_masks,
            with_lesion,
            workers: 1,
            prefetch: 1,
        };
        let mut batches = loader::Loader::spawn(ds.clone(), vec![(0..n).collect()], spec);
        batches.next().unwrap().unwrap()
    };
    let load = |augment, lesion_masks| batch(augment, lesion_masks, false).pixels;
    let plain = load(None, None);
    let swapped = load(Some((identity.clone(), 3, 0)), Some(masks.clone()));
    assert_eq!(
        swapped,
        load(Some((identity.clone(), 3, 0)), Some(masks.clone()))
    );
    assert_ne!(
        swapped,
        load(Some((identity.clone(), 3, 1)), Some(masks.clone()))
    );
    let lesions: Vec<Vec<bool>> = (0..n)
        .map(|k| {
            let path = ds.samples[k].path().unwrap();
            masks
                .regions(path, side, ResizeMode::ShorterSideCrop)
                .unwrap()[0]
                .mask
                .clone()
        })
        .collect();
    // Whether pixel `i` lies within the swap's margin of `mask`.
    let near = |mask: &[bool], i: usize| {
        let (x, y) = ((i % side) as i64, (i / side) as i64);
        let m = LESION_MARGIN_PX as i64;
        (y - m..=y + m).any(|v| {
            (x - m..=x + m).any(|u| {
                (0..side as i64).contains(&u)
                    && (0..side as i64).contains(&v)
                    && mask[(v * side as i64 + u) as usize]
            })
        })
    };
    let image = |pixels: &[f32], k: usize| pixels[k * 3 * plane..(k + 1) * 3 * plane].to_vec();
    let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
    for k in 0..n {
        let (out, own) = (image(&swapped, k), image(&plain, k));
        // The lesion (and its margin) is the image's own.
        for i in (0..plane).filter(|&i| near(&lesions[k], i)) {
            assert!(
                (0..3).all(|c| close(out[c * plane + i], own[c * plane + i])),
                "{k} {i}"
            );
        }
        assert!(
            out.iter().zip(&own).any(|(a, b)| !close(*a, *b)),
            "{k} unchanged"
        );
        // Away from both lesions, every pixel is one other image's skin.
        let donors: Vec<usize> = (0..n)
            .filter(|&j| j != k)
            .filter(|&j| {
                let skin = image(&plain, j);
                let far: Vec<usize> = (0..plane)
                    .filter(|&i| !near(&lesions[k], i) && !near(&lesions[j], i))
                    .collect();
                !far.is_empty()
                    && far
                        .iter()
                        .all(|&i| (0..3).all(|c| close(out[c * plane + i], skin[c * plane + i])))
            })
            .collect();
        assert_eq!(donors.len(), 1, "image {k}: donors {donors:?}");
    }
    // The masks handed out with a batch (`training.cam_mask_weight`) are each image's own
    // lesion, moved as the image moved.
    assert_eq!(batch(None, Some(masks.clone()), false).lesion, None);
    let unmoved = batch(None, Some(masks.clone()), true)
        .lesion
        .expect("masks");
    let want: Vec<f32> = lesions
        .iter()
        .flatten()
        .map(|&m| f32::from(u8::from(m)))
        .collect();
    assert_eq!(unmoved, want);
    let swapped_too = batch(Some((identity.clone(), 3, 0)), Some(masks.clone()), true);
    assert_eq!(
        (swapped_too.pixels, swapped_too.lesion),
        (swapped.clone(), Some(want.clone()))
    );
    let moving = AugmentParams {
        hflip: true,
        vflip: true,
        rotation_deg: 90.0,
        ..identity.clone()
    };
    let moved = batch(Some((moving, 3, 0)), Some(masks.clone()), true)
        .lesion
        .expect("masks");
    assert_ne!(moved, want, "some image flipped or turned");
    assert!(moved.iter().all(|v| (0.0..=1.0).contains(v)));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn background_swap_trains_and_refuses_a_set_without_every_mask() {
    let root = ham_with_masks("bg-swap-masks");
    let data_root = format!("data.root={}", root.display());
    let config = || {
        tiny_config(
            "pgd_at",
            1,
            &[
                data_root.as_str(),
                "data.dataset=ham10000",
                "training.augmentation.background_swap=0.5",
            ],
        )
    };
    let run = temp_dir("bg-swap-run");
    let events = train(config(), &run);
    assert!(events.iter().any(|e| matches!(e, TrainEvent::Finished(_))));
    let _ = std::fs::remove_dir_all(&run);
    // The map's penalty at 64 px (a 2x2 layer4 map), weight 2: each step logs the share
    // outside the lesion, and the loss is the cross-entropy plus twice that.
    let cam_config = || {
        tiny_config(
            "pgd_at",
            2,
            &[
                data_root.as_str(),
                "data.dataset=ham10000",
                "input.resolution=64",
                "training.cam_mask_weight=2.0",
            ],
        )
    };
    let run = temp_dir("cam-mask-run");
    let steps: Vec<_> = train(cam_config(), &run)
        .into_iter()
        .filter_map(|e| match e {
            TrainEvent::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 2);
    for s in &steps {
        let share = s.cam_outside.expect("the share is logged");
        assert!((0.0..=1.0).contains(&share), "{share}");
        close(
            "loss",
            s.loss as f32,
            (s.loss_natural + 2.0 * share) as f32,
            1e-5,
        );
    }
    assert!(
        metrics_without_times(&run)
            .iter()
            .any(|l| l.get("cam_outside").is_some())
    );
    let _ = std::fs::remove_dir_all(&run);
    let (first, _) = common::HAM_SAMPLES[0];
    std::fs::remove_file(root.join(format!("masks/{first}.png"))).unwrap();
    let refused = |config: TrainConfig, name: &str| {
        Trainer::new(config, &temp_dir(name), ComputeDevice::cpu())
            .err()
            .expect("refused")
            .to_string()
    };
    for (config, option) in [
        (config(), "background_swap"),
        (cam_config(), "cam_mask_weight"),
    ] {
        let e = refused(config, "bg-swap-one-missing");
        assert!(
            e.contains("1 of 5") && e.contains(&format!("{first}.png")) && e.contains(option),
            "{e}"
        );
    }
    std::fs::remove_dir_all(root.join("masks")).unwrap();
    for (config, option) in [
        (config(), "background_swap"),
        (cam_config(), "cam_mask_weight"),
    ] {
        let e = refused(config, "bg-swap-no-masks");
        assert!(e.contains("no lesion masks") && e.contains(option), "{e}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// `training.explanation_images`: the acceptance command writes each epoch's Grad-CAM quality
/// (deletion / insertion AUC, energy inside the lesion mask, pointing game) beside loss and
/// accuracy; the masks' share is the one the committed mask files give; 0 turns it off.
#[test]
fn each_epoch_scores_the_explanations_of_fixed_validation_images() {
    let run = |name: &str, extra: &[&str]| -> Vec<serde_json::Value> {
        let dir = temp_dir(name);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"));
        cmd.arg("train")
            .arg("--config")
            .arg(fixture("train_tiny.yaml"))
            .args(["--set", "training.epochs=1", "--quiet", "--out"])
            .arg(&dir);
        for e in extra {
            cmd.args(["--set", e]);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "epoch")
            .collect()
    };
    let epochs = run("explanation", &[]);
    assert_eq!(epochs.len(), 1);
    let q = &epochs[0]["explanation"];
    assert_eq!(q["images"], 8, "{q}");
    assert_eq!(q["masked_images"], 8, "every val image has its mask: {q}");
    for k in [
        "deletion_auc",
        "insertion_auc",
        "energy_inside",
        "pointing_hit_rate",
    ] {
        let v = q[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k}: {v}");
    }
    assert!(epochs[0]["explanation_time_s"].as_f64().unwrap() > 0.0);
    // The regions' share, from the mask files themselves.
    let mut share = 0.0;
    let masks: Vec<PathBuf> = ["mel", "nv"]
        .iter()
        .flat_map(|c| std::fs::read_dir(fixture("train_tiny").join("val").join(c)).unwrap())
        .map(|e| {
            let p = e.unwrap().path();
            fixture("train_tiny")
                .join("masks")
                .join(p.file_name().unwrap())
        })
        .collect();
    for m in &masks {
        let img = image::open(m).unwrap().to_luma8();
        share += img.pixels().filter(|p| p.0[0] > 127).count() as f64 / img.len() as f64;
    }
    share /= masks.len() as f64;
    let got = q["region_fraction"].as_f64().unwrap();
    assert!((got - share).abs() < 1e-6, "{got} vs {share}");

    let off = run("explanation-off", &["training.explanation_images=0"]);
    assert!(off[0].get("explanation").is_none(), "{}", off[0]);
    let dir = temp_dir("explanation-bad");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"))
        .arg("train")
        .arg("--config")
        .arg(fixture("train_tiny.yaml"))
        .args(["--set", "training.explanation_steps=1", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("training.explanation_steps"));
}
