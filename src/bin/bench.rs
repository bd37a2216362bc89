//! Speed and memory of the core operations, side by side with PyTorch (not a test):
//!
//!     python3 tools/bench_torch.py --threads 2 --train --out bench_torch.json  # PyTorch side
//!     cargo run --release --bin bench -- --torch bench_torch.json --train       # + ratios
//!
//! `bench --help` lists the options. Rows: forward (batch 1 and 8), forward + backward to the
//! input (frozen weights), Grad-CAM on layer4, PGD-10 (eps 8/255, alpha 2/255, random start),
//! one training step (batch 8: forward, backward with weight gradients, SGD update), for the
//! full ResNet-50 at 224 and the narrow test model (base width 8 at 128). `--train` adds what
//! trains the shipped models (base widths 16 and 32 at 160 px, batch 64): the forward at batch
//! 64 (validation), TRADES' inner PGD-3, and one optimisation step of the trainer's recipe,
//! clean and TRADES, with the clean step split into forward, backward and optimizer; and the
//! data loader's images/s (decode + augmentation of HAM10000 at 160 px, 1 and 2 workers).
//! `--ops` instead times each distinct convolution of ResNet-50 at 224. Medians after one
//! warm-up; peak resident memory per row (Linux: VmHWM, reset through /proc/self/clear_refs
//! before each row). With the PyTorch JSON the table gains a Triscope / PyTorch column measured
//! on the same machine. Writes `bench.json` (or `--json PATH`).

#[path = "../process.rs"]
mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use clap::Parser;
use serde::{Deserialize, Serialize};
use triscope::attack::{AttackConfig, AttackGoal, run_attack};
use triscope::explain::{TargetClass, grad_cam};
use triscope::io::data::Dataset;
use triscope::model::config::Precision;
use triscope::model::device::{BackendKind, ComputeDevice};
use triscope::model::{LayerId, ModelConfig, ResNet50};
use triscope::train::augment::AugmentParams;
use triscope::train::config::TrainingSection;
use triscope::train::loader::{Loader, LoaderSpec, epoch_order};
use triscope::train::loss::{InnerAttack, cross_entropy, trades_adversarial, trades_outer};
use triscope::train::optim::build_optimizer;
use triscope::util::choice::Choice;
use triscope::util::rng::SplitMix64;

/// Timings of Triscope's core operations, side by side with PyTorch's (tools/bench_torch.py).
#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Timings of Triscope's core operations, side by side with PyTorch's (tools/bench_torch.py)"
)]
struct Args {
    /// Timed runs per row (after one warm-up); the median and minimum are reported
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where to write the rows as JSON
    #[arg(long, default_value = "bench.json", value_name = "PATH")]
    json: PathBuf,
    /// PyTorch's rows (tools/bench_torch.py --out); ratios are printed when it exists
    #[arg(long, default_value = "bench_torch.json", value_name = "PATH")]
    torch: PathBuf,
    /// Also run every row on the wgpu backend (a GPU, or lavapipe)
    #[arg(long)]
    wgpu: bool,
    /// Run the model rows on burn's own ops (the fused flex path off): the before
    #[arg(long)]
    plain: bool,
    /// Leave out the training step of the full-width and narrow test models
    #[arg(long)]
    skip_train: bool,
    /// Leave out the full-width model (the narrow test model only)
    #[arg(long)]
    narrow_only: bool,
    /// Time each distinct convolution of ResNet-50 at 224 instead of the model rows
    #[arg(long)]
    ops: bool,
    /// Add the training rows: base widths 16 and 32 at 160 px, batch 64, clean and TRADES
    #[arg(long)]
    train: bool,
    /// Only the training rows (and the loader)
    #[arg(long)]
    train_only: bool,
    /// The Attack tab's latency rows: the app's model thread with this checkpoint (or the
    /// embedded default, `embedded`) on a bundled sample, PGD-10 at 2/255 as a slider move
    /// asks for it: time to the first step and to the result with both Grad-CAMs
    #[arg(long, value_name = "PATH|embedded")]
    live: Option<String>,
    /// The sample image of the live-attack rows
    #[arg(
        long,
        default_value = "assets/samples/ham10000/ISIC_0024317.jpg",
        value_name = "PATH"
    )]
    sample: PathBuf,
    /// What a GPU machine offers and how Triscope runs there: the wgpu adapter, wgpu against
    /// flex (logits and Grad-CAM of a seeded model, the embedded model's probabilities), the
    /// model rows and the embedded model's live attack on wgpu (tools/gpu_check.sh runs it)
    #[arg(long)]
    gpu_check: bool,
    /// Only the rows whose operation contains this text (to profile one row)
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// HAM10000 folder for the loader rows (skipped when it does not exist)
    #[arg(long, default_value = "../shared/data/ham10000", value_name = "DIR")]
    data: PathBuf,
    /// The model rows in each of these precisions (comma-separated: f32, bf16): bf16 rounds
    /// the convolutions' operands to bf16 and sums in f32 (CPUs with AVX512_BF16; skipped
    /// with a note elsewhere)
    #[arg(long, value_delimiter = ',', default_value = "f32", value_parser = parse_precision)]
    precision: Vec<Precision>,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
        .map_err(|e: triscope::TriscopeError| e.to_string())
}

#[derive(Serialize, Deserialize, Clone)]
struct Row {
    #[serde(default)]
    backend: String,
    operation: String,
    base_width: usize,
    resolution: usize,
    batch: usize,
    median_secs: f64,
    min_secs: f64,
    #[serde(default)]
    peak_rss_mib: f64,
    runs: usize,
    /// "f32" or "bf16" (PyTorch: autocast).
    #[serde(default = "f32_name")]
    precision: String,
    /// Whose row: "triscope", "pytorch" or "onnxruntime" (older PyTorch files: none).
    #[serde(default = "pytorch_name")]
    engine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    torch_median_secs: Option<f64>,
    /// To PyTorch's row in the same precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio_to_torch: Option<f64>,
    /// A bf16 row to PyTorch's f32 row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio_to_torch_f32: Option<f64>,
    /// A forward row to ONNX Runtime's (f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio_to_ort: Option<f64>,
}

impl Row {
    /// One of Triscope's rows on `dev`, in this thread's precision. `shape`: (base width,
    /// resolution, batch); `times`: (median, minimum) seconds.
    fn triscope(
        dev: &ComputeDevice,
        operation: String,
        (base_width, resolution, batch): (usize, usize, usize),
        (median_secs, min_secs): (f64, f64),
        peak_rss_mib: f64,
        runs: usize,
    ) -> Self {
        Self {
            backend: dev.description.clone(),
            operation,
            base_width,
            resolution,
            batch,
            median_secs,
            min_secs,
            peak_rss_mib,
            runs,
            precision: precision_of(dev).name().to_string(),
            engine: "triscope".into(),
            torch_median_secs: None,
            ratio_to_torch: None,
            ratio_to_torch_f32: None,
            ratio_to_ort: None,
        }
    }
}

fn f32_name() -> String {
    "f32".into()
}

fn pytorch_name() -> String {
    "pytorch".into()
}

#[derive(Deserialize)]
struct TorchBench {
    torch: String,
    #[serde(default)]
    onnxruntime: Option<String>,
    threads: usize,
    rows: Vec<Row>,
}

/// Forget the peak resident set so far (Linux); no-op elsewhere. Memory kept by the
/// allocator ([`process::keep_freed_memory`]) is handed back first, so that each row's
/// peak is its own.
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the operating system.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set since the last reset, in MiB (NaN where unknown).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `--only`: the text a row's operation must contain (set once in `main`).
static ONLY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn wanted(operation: &str) -> bool {
    match ONLY.get() {
        Some(Some(text)) => operation.contains(text.as_str()),
        _ => true,
    }
}

fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?; // warm-up: allocations, kernel compilation
    let mut secs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Ok((secs[secs.len() / 2], secs[0]))
}

fn input(batch: usize, config: &ModelConfig, device: &Device) -> Tensor<4> {
    let n = batch * config.in_channels * config.resolution * config.resolution;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    Tensor::from_data(
        TensorData::new(
            values,
            [
                batch,
                config.in_channels,
                config.resolution,
                config.resolution,
            ],
        ),
        device,
    )
}

/// Read a result back to the host: the only reliable "done" on asynchronous backends.
fn sync<const D: usize>(t: Tensor<D>) -> Result<()> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map(|_| ())
        .map_err(|e| anyhow!("{e:?}"))
}

fn bench_model(
    dev: &ComputeDevice,
    config: &ModelConfig,
    runs: usize,
    skip_train: bool,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let model = ResNet50::init(config, 0, &dev.device)?.valid();
    let mut measure =
        |operation: &str, batch: usize, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            if !wanted(operation) {
                return Ok(());
            }
            reset_peak_rss();
            let t = time_runs(runs, f)?;
            push_row(rows, dev, config, operation, batch, t, runs);
            Ok(())
        };
    for batch in [1usize, 8] {
        measure("forward", batch, &mut || {
            sync(model.forward(input(batch, config, &dev.device)))
        })?;
    }
    measure("forward + backward to input", 1, &mut || {
        let x = input(1, config, &dev.device).autodiff().require_grad();
        let grads = model.forward(x.clone()).sum().backward();
        sync(x.grad(&grads).context("no input gradient")?)
    })?;
    measure("Grad-CAM layer4", 1, &mut || {
        grad_cam(
            &model,
            input(1, config, &dev.device),
            LayerId::Layer4,
            TargetClass::Predicted,
        )?;
        Ok(())
    })?;
    measure("PGD-10", 1, &mut || {
        let out = run_attack(
            &model,
            input(1, config, &dev.device),
            &AttackGoal::Untargeted(vec![4]),
            &AttackConfig::pgd(10),
            &mut |_| {},
            &AtomicBool::new(false),
        )?;
        sync(out.adversarial)
    })?;
    if skip_train {
        return Ok(());
    }
    // Training: a model with autodiff parameters and BatchNorm in training mode.
    let mut train_model = Some(ResNet50::init(config, 0, &dev.device)?.train());
    let mut optim = SgdConfig::new().init();
    let labels: Vec<usize> = (0..8).map(|i| i % config.num_classes).collect();
    measure("training step", 8, &mut || {
        let m = train_model.take().context("model lost")?;
        let x = input(8, config, &dev.device.clone().autodiff());
        let logits = m.forward(x); // [8, classes]
        let mut one_hot = vec![0.0f32; 8 * config.num_classes];
        for (i, &c) in labels.iter().enumerate() {
            one_hot[i * config.num_classes + c] = 1.0;
        }
        let mask = Tensor::<2>::from_data(
            TensorData::new(one_hot, [8, config.num_classes]),
            &logits.device(),
        );
        let loss = (log_softmax(logits, 1) * mask).sum().neg() / 8.0;
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let m = optim.step(0.01, m, grads);
        sync(m.fc.weight.val())?;
        train_model = Some(m);
        Ok(())
    })?;
    Ok(())
}

/// Time the distinct convolutions of ResNet-50 at 224 (batch 1) one by one, to show where a
/// forward pass spends its time. Per shape: burn's raw `conv2d` (forward), then conv + BatchNorm
/// (inference) + ReLU as the model runs it, forward and forward + backward to the input, through
/// the fused flex path and through burn's plain ops. Prints per-shape medians and the totals
/// weighted by how often each shape occurs.
fn bench_ops(dev: &ComputeDevice, runs: usize) -> Result<Vec<Row>> {
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use triscope::model::fast::{Epilogue, conv_bn, with_plain_path};
    // (c_in, c_out, kernel, stride, input side, occurrences in ResNet-50)
    let shapes: [(usize, usize, usize, usize, usize, usize); 17] = [
        (3, 64, 7, 2, 224, 1),
        (64, 64, 1, 1, 56, 1),
        (64, 64, 3, 1, 56, 3),
        (64, 256, 1, 1, 56, 4),
        (256, 64, 1, 1, 56, 2),
        (256, 128, 1, 1, 56, 1),
        (128, 128, 3, 2, 56, 1),
        (128, 512, 1, 1, 28, 4),
        (256, 512, 1, 2, 56, 1),
        (512, 128, 1, 1, 28, 3),
        (128, 128, 3, 1, 28, 3),
        (512, 256, 1, 1, 28, 1),
        (256, 256, 3, 2, 28, 1),
        (256, 1024, 1, 1, 14, 6),
        (1024, 256, 1, 1, 14, 5),
        (256, 256, 3, 1, 14, 5),
        (512, 512, 3, 1, 7, 2),
    ];
    let mut rows = Vec::new();
    let kinds = [
        "conv",
        "conv+bn+relu fwd",
        "conv+bn+relu fwd (burn ops)",
        "conv+bn+relu fwd+bwd",
        "conv+bn+relu fwd+bwd (burn ops)",
    ];
    let mut totals = [0.0f64; 5];
    for (c_in, c_out, k, stride, side, count) in shapes {
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..c_in * side * side)
                    .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                    .collect::<Vec<f32>>(),
                [1, c_in, side, side],
            ),
            &dev.device,
        );
        let w = Tensor::<4>::from_data(
            TensorData::new(vec![0.01f32; c_out * c_in * k * k], [c_out, c_in, k, k]),
            &dev.device,
        );
        let pad = k / 2;
        let conv = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(&dev.device)
            .valid();
        let bn = BatchNormConfig::new(c_out).init(&dev.device).valid();
        let fwd = || sync(conv_bn(&conv, &bn, x.clone(), Epilogue::Relu));
        let fwd_bwd = || {
            let xg = x.clone().autodiff().require_grad();
            let grads = conv_bn(&conv, &bn, xg.clone(), Epilogue::Relu)
                .sum()
                .backward();
            sync(xg.grad(&grads).context("no input gradient")?)
        };
        let medians = [
            time_runs(runs, || {
                sync(conv2d(
                    x.clone(),
                    w.clone(),
                    None,
                    ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
                ))
            })?,
            time_runs(runs, fwd)?,
            time_runs(runs, || with_plain_path(fwd))?,
            time_runs(runs, fwd_bwd)?,
            time_runs(runs, || with_plain_path(fwd_bwd))?,
        ];
        let shape = format!("{c_in}->{c_out} k{k} s{stride} @{side}");
        println!(
            "{:<10} {:<24} x{count:<2} conv {:>7.4}  fused fwd {:>7.4} (burn {:>7.4})  fused fwd+bwd {:>7.4} (burn {:>7.4}) s",
            short(&dev.description),
            shape,
            medians[0].0,
            medians[1].0,
            medians[2].0,
            medians[3].0,
            medians[4].0,
        );
        for (i, (kind, (median, min))) in kinds.iter().zip(medians).enumerate() {
            totals[i] += median * count as f64;
            let operation = format!("{kind} {shape}");
            rows.push(Row::triscope(
                dev,
                operation,
                (64, 224, 1),
                (median, min),
                f64::NAN,
                runs,
            ));
        }
    }
    println!("all convolutions of one ResNet-50 (weighted totals):");
    for (kind, total) in kinds.iter().zip(totals) {
        println!("  {kind:<32} {total:.3} s");
        let operation = format!("{kind} all");
        rows.push(Row::triscope(
            dev,
            operation,
            (64, 224, 1),
            (total, total),
            f64::NAN,
            runs,
        ));
    }
    Ok(rows)
}

/// What trains the shipped models: (base width, resolution, batch).
const TRAIN_SETUPS: [(usize, usize, usize); 2] = [(16, 160, 64), (32, 160, 64)];

/// The precision a row on `dev` runs in: this thread's setting on the CPU fast path, f32
/// on wgpu and on burn's plain ops.
fn precision_of(dev: &ComputeDevice) -> Precision {
    match dev.backend {
        BackendKind::Flex => triscope::model::fast::precision(),
        BackendKind::Wgpu => Precision::F32,
    }
}

fn push_row(
    rows: &mut Vec<Row>,
    dev: &ComputeDevice,
    config: &ModelConfig,
    operation: &str,
    batch: usize,
    (median, min): (f64, f64),
    runs: usize,
) {
    let peak = peak_rss_mib();
    println!(
        "{:<10} {:<4} w{:<2} r{:<3} {:<30} b{:<2} median {:>8.3} s  min {:>8.3} s  {:>7.1} images/s  peak {:>6.0} MiB",
        short(&dev.description),
        precision_of(dev).name(),
        config.base_width,
        config.resolution,
        operation,
        batch,
        median,
        min,
        batch as f64 / median,
        peak
    );
    let shape = (config.base_width, config.resolution, batch);
    rows.push(Row::triscope(
        dev,
        operation.to_string(),
        shape,
        (median, min),
        peak,
        runs,
    ));
}

/// The rows of `tools/bench_torch.py --train`: validation forward, TRADES' inner PGD-3 and one
/// step of the trainer's recipe (weighted cross-entropy, SGD with Nesterov momentum and weight
/// decay), clean and TRADES; the clean step also split into its forward (with the loss),
/// backward and optimizer update.
fn bench_train(
    dev: &ComputeDevice,
    (width, resolution, batch): (usize, usize, usize),
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut config = ModelConfig::ham10000();
    config.base_width = width;
    config.resolution = resolution;
    let section = TrainingSection {
        lr: 0.01,
        weight_decay: 5e-4,
        ..TrainingSection::default()
    };
    let inner = InnerAttack {
        eps_linf: 2.0 / 255.0,
        steps: 3,
        alpha: 1.0 / 255.0,
    };
    let labels: Vec<usize> = (0..batch).map(|i| i % config.num_classes).collect();
    let class_weights: Vec<f32> = (0..config.num_classes)
        .map(|c| 0.5 + 1.5 * c as f32 / (config.num_classes - 1) as f32)
        .collect();
    let plain = dev.device.clone();
    let ad = plain.clone().autodiff();
    let eval_model = ResNet50::init(&config, 0, &plain)?.valid();
    let measure = |f: &mut dyn FnMut() -> Result<()>| {
        reset_peak_rss();
        time_runs(runs, f)
    };
    if wanted("forward") {
        let t = measure(&mut || sync(eval_model.forward(input(batch, &config, &plain))))?;
        push_row(rows, dev, &config, "forward", batch, t, runs);
    }
    if wanted("TRADES inner PGD-3") {
        let t = measure(&mut || {
            let mut rng = SplitMix64::new(1);
            let x = input(batch, &config, &plain);
            sync(trades_adversarial(&eval_model, &x, &inner, &mut rng)?)
        })?;
        push_row(rows, dev, &config, "TRADES inner PGD-3", batch, t, runs);
    }

    let mut model = Some(ResNet50::init(&config, 0, &ad)?.train());
    let mut optimizer = build_optimizer(&section);
    // (forward with loss, backward, optimizer) seconds of each timed clean step.
    let mut parts: Vec<[f64; 3]> = Vec::new();
    let mut clean_step = |record: bool| -> Result<()> {
        let m = model.take().context("model lost")?;
        let t0 = Instant::now();
        let logits = m.forward(input(batch, &config, &ad)); // [b, classes]
        let loss = cross_entropy(logits, &labels, Some(&class_weights), 0.0);
        sync(loss.clone())?;
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let t2 = Instant::now();
        let m = optimizer.step(section.lr, m, grads);
        sync(m.fc.weight.val())?;
        if record {
            parts.push([
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64(),
                t2.elapsed().as_secs_f64(),
            ]);
        }
        model = Some(m);
        Ok(())
    };
    if wanted("training step clean") {
        clean_step(false)?;
        reset_peak_rss();
        let t = time_runs(runs, || clean_step(true))?;
        push_row(rows, dev, &config, "training step clean", batch, t, runs);
        for (i, part) in ["forward + loss", "backward", "optimizer"]
            .iter()
            .enumerate()
        {
            let mut secs: Vec<f64> = parts.iter().map(|p| p[i]).collect();
            secs.sort_by(f64::total_cmp);
            let name = format!("training step clean: {part}");
            push_row(
                rows,
                dev,
                &config,
                &name,
                batch,
                (secs[secs.len() / 2], secs[0]),
                runs,
            );
        }
    }
    if !wanted("training step TRADES") {
        return Ok(());
    }
    let t = measure(&mut || {
        let m = model.take().context("model lost")?;
        let x = input(batch, &config, &plain);
        let mut rng = SplitMix64::new(2);
        let x_adv = trades_adversarial(&m.valid(), &x, &inner, &mut rng)?;
        let x_adv = Tensor::<4>::from_data(x_adv.into_data(), &ad);
        let (parts, _, _) = trades_outer(
            &m,
            input(batch, &config, &ad),
            x_adv,
            &labels,
            Some(&class_weights),
            0.0,
            6.0,
        );
        let grads = GradientsParams::from_grads(parts.total.backward(), &m);
        let m = optimizer.step(section.lr, m, grads);
        sync(m.fc.weight.val())?;
        model = Some(m);
        Ok(())
    })?;
    push_row(rows, dev, &config, "training step TRADES", batch, t, runs);
    Ok(())
}

/// The data loader alone: HAM10000 training images decoded, resized to 160 px and augmented,
/// in batches of 64, with 1 and 2 worker threads (images/s to set beside a step's images/s).
fn bench_loader(data: &std::path::Path, rows: &mut Vec<Row>) -> Result<()> {
    if !data.join("labels.csv").is_file() {
        println!("loader: {} not found, rows skipped", data.display());
        return Ok(());
    }
    let dataset = Arc::new(Dataset::open(data, Some("train"))?);
    let (batch, resolution, batches) = (64, 160, 10);
    let order = epoch_order(dataset.len(), 42, 0);
    let plan: Vec<Vec<usize>> = order
        .chunks(batch)
        .take(batches)
        .map(<[usize]>::to_vec)
        .collect();
    let mut config = ModelConfig::ham10000();
    config.resolution = resolution;
    let cpu = ComputeDevice::cpu();
    for workers in [1usize, 2] {
        let spec = LoaderSpec {
            channels: 3,
            resolution,
            augment: Some((AugmentParams::default(), 42, 0)),
            lesion_masks: None,
            with_lesion: false,
            workers,
            prefetch: 4,
        };
        let t = Instant::now();
        for b in Loader::spawn(dataset.clone(), plan.clone(), spec) {
            b?;
        }
        let per_batch = t.elapsed().as_secs_f64() / batches as f64;
        let name = format!(
            "loader, {workers} worker{}",
            if workers > 1 { "s" } else { "" }
        );
        push_row(rows, &cpu, &config, &name, batch, (per_batch, per_batch), 1);
    }
    Ok(())
}

/// The Attack tab as a slider move runs it: the app's model thread (`workbench`) on `dev`,
/// `model` loaded (None: the embedded default), `sample` analysed, then PGD-10 at 2/255 (step
/// 0.5/255, the panel's defaults scaled) `runs` times; seconds to the first step's event and
/// to the finished result (adversarial prediction and both Grad-CAMs).
fn bench_live_attack(
    dev: &ComputeDevice,
    model: Option<&std::path::Path>,
    sample: &std::path::Path,
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    use std::time::Duration;
    use triscope::attack::AttackMethod;
    use triscope::explain::attribution::Method;
    use triscope::workbench::{AttackRequest, Job, WorkerEvent, WorkerHandle};
    let worker = WorkerHandle::spawn(dev.clone(), Box::new(|| {}))?;
    let wait = |want: &dyn Fn(&WorkerEvent) -> bool| -> Result<WorkerEvent> {
        loop {
            match worker.wait_event(Duration::from_secs(600)) {
                Some(WorkerEvent::Failed { what, message, .. }) => {
                    return Err(anyhow!("{what}: {message}"));
                }
                Some(e) if want(&e) => return Ok(e),
                Some(_) => {}
                None => return Err(anyhow!("the model thread did not answer in 10 minutes")),
            }
        }
    };
    worker.submit(Job::LoadModel {
        path: model.map(std::path::Path::to_path_buf),
    });
    let WorkerEvent::ModelLoaded { info, .. } =
        wait(&|e| matches!(e, WorkerEvent::ModelLoaded { .. }))?
    else {
        return Err(anyhow!("no model"));
    };
    worker.submit(Job::Analyze {
        path: sample.to_path_buf(),
        target: TargetClass::Predicted,
        top_k: 8,
        method: Method::GradCam,
        method_layer: LayerId::Layer4,
        window: None,
    });
    wait(&|e| matches!(e, WorkerEvent::Analysis(_)))?;
    let mut first = Vec::new();
    let mut done = Vec::new();
    for run in 0..=runs {
        let t = Instant::now();
        let mut request = AttackRequest::new(AttackMethod::Pgd, 2.0 / 255.0, 10);
        request.config.alpha = 0.5 / 255.0;
        request.config.seed = run as u64;
        worker.submit(Job::Attack(request));
        wait(&|e| matches!(e, WorkerEvent::AttackStep { .. }))?;
        let t_first = t.elapsed().as_secs_f64();
        wait(&|e| matches!(e, WorkerEvent::Attack(_)))?;
        if run > 0 {
            // The first run is the warm-up.
            first.push(t_first);
            done.push(t.elapsed().as_secs_f64());
        }
    }
    for (name, mut secs) in [
        ("live attack: first PGD step", first),
        ("live attack: PGD-10 + both Grad-CAMs", done),
    ] {
        secs.sort_by(f64::total_cmp);
        let t = (secs[secs.len() / 2], secs[0]);
        push_row(rows, dev, &info.config, name, 1, t, runs);
    }
    Ok(())
}

/// `--gpu-check`: the adapter, wgpu against flex, then the model rows and the live attack on
/// wgpu. Without an adapter it says what it found and returns.
fn gpu_check(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    use triscope::inference::Classifier;
    let gpu = match ComputeDevice::wgpu() {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("gpu-check: no wgpu adapter: {e}");
            return Ok(());
        }
    };
    println!(
        "gpu-check: adapter {} ({})",
        gpu.description,
        if gpu.software_adapter {
            "software rasteriser, not a GPU"
        } else {
            "hardware"
        }
    );
    let cpu = ComputeDevice::cpu();
    // A seeded narrow model: the same weights on both devices (host-side generator).
    let mut config = ModelConfig::ham10000();
    config.base_width = 8;
    config.resolution = 128;
    let logits_and_cam = |dev: &ComputeDevice| -> Result<(Vec<f32>, Vec<f32>)> {
        let model = ResNet50::init(&config, 7, &dev.device)?.valid();
        let batch = grad_cam(
            &model,
            input(2, &config, &dev.device),
            LayerId::Layer4,
            TargetClass::Predicted,
        )?;
        let logits = batch.logits.concat();
        let cams = batch.maps.iter().flat_map(|m| m.raw.clone()).collect();
        Ok((logits, cams))
    };
    let (cpu_logits, cpu_cam) = logits_and_cam(&cpu)?;
    let (gpu_logits, gpu_cam) = logits_and_cam(&gpu)?;
    let max_rel = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs() / scale))
    };
    println!(
        "gpu-check: seeded w8 model at 128 px, wgpu vs flex: logits {:.2e}, Grad-CAM layer4 {:.2e} (largest difference / largest value)",
        max_rel(&gpu_logits, &cpu_logits),
        max_rel(&gpu_cam, &cpu_cam)
    );
    let probabilities = |dev: &ComputeDevice| -> Result<Vec<f32>> {
        let classifier = Classifier::load(None, dev.clone())?;
        let image = classifier.load_image(&args.sample)?;
        let prediction = classifier.predict(&[&image.pixels])?;
        Ok(prediction[0].scores.iter().map(|s| s.probability).collect())
    };
    let (p_cpu, p_gpu) = (probabilities(&cpu)?, probabilities(&gpu)?);
    let largest = p_cpu
        .iter()
        .zip(&p_gpu)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "gpu-check: embedded model on {}: probabilities differ by at most {largest:.2e}",
        args.sample.display()
    );
    let mut setups = vec![];
    if !args.narrow_only {
        setups.push(ModelConfig::ham10000());
    }
    let mut narrow = ModelConfig::ham10000();
    narrow.base_width = 8;
    narrow.resolution = 128;
    setups.push(narrow);
    for config in &setups {
        bench_model(&gpu, config, args.runs, args.skip_train, rows)?;
    }
    bench_live_attack(&gpu, None, &args.sample, args.runs, rows)
}

fn short(description: &str) -> String {
    if description.starts_with("CPU") {
        "flex".into()
    } else {
        "wgpu".into()
    }
}

/// The reference row (PyTorch's or ONNX Runtime's) with `row`'s operation and shape, in
/// `precision`.
fn find<'a>(reference: &'a [Row], row: &Row, precision: &str, engine: &str) -> Option<&'a Row> {
    let shape = |r: &Row| (r.operation.clone(), r.base_width, r.resolution, r.batch);
    reference
        .iter()
        .find(|t| shape(t) == shape(row) && t.precision == precision && t.engine == engine)
}

/// bf16 rows need the CPU fast path on a CPU with AVX512_BF16; says why not otherwise.
fn bf16_rows_possible(dev: &ComputeDevice) -> bool {
    if dev.backend != BackendKind::Flex {
        println!(
            "{}: no bf16 rows (the bf16 kernels are the CPU's)",
            short(&dev.description)
        );
        return false;
    }
    let (precision, refused) = Precision::Bf16.resolve(triscope::model::fast::bf16::supported());
    if let Some(why) = refused {
        println!("no bf16 rows: {why}");
    }
    precision == Precision::Bf16
}

fn main() -> Result<()> {
    process::keep_freed_memory();
    // SAFETY: the first statements of main; no other thread exists yet.
    unsafe { process::default_burn_device_to_cpu() };
    let args = Args::parse();
    let _ = ONLY.set(args.only.clone());
    let runs = args.runs.max(1);
    let torch_path = args.torch.display().to_string();
    let mut setups = Vec::new();
    if !args.narrow_only {
        setups.push(ModelConfig::ham10000()); // width 64, 224
    }
    let mut narrow = ModelConfig::ham10000();
    narrow.base_width = 8;
    narrow.resolution = 128;
    setups.push(narrow);

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("Triscope bench: {runs} runs after a warm-up, {threads} threads");
    let mut rows = Vec::new();
    let mut devices = vec![ComputeDevice::cpu()];
    if args.wgpu {
        match ComputeDevice::wgpu() {
            Ok(gpu) => devices.push(gpu),
            Err(e) => println!("wgpu: not available ({e})"),
        }
    }
    if args.gpu_check {
        gpu_check(&args, &mut rows)?;
    } else if args.ops {
        rows.extend(bench_ops(&devices[0], runs)?);
    } else {
        for dev in &devices {
            let mut run = || -> Result<()> {
                if !args.train_only {
                    for config in &setups {
                        bench_model(dev, config, runs, args.skip_train, &mut rows)?;
                    }
                }
                if args.train || args.train_only {
                    for setup in TRAIN_SETUPS {
                        bench_train(dev, setup, runs, &mut rows)?;
                    }
                }
                Ok(())
            };
            match args.plain {
                true => triscope::model::fast::with_plain_path(run)?,
                false => {
                    for &precision in &args.precision {
                        if precision == Precision::Bf16 && !bf16_rows_possible(dev) {
                            continue;
                        }
                        triscope::model::fast::with_precision(precision, &mut run)?;
                    }
                }
            }
        }
        if (args.train || args.train_only) && wanted("loader") {
            bench_loader(&args.data, &mut rows)?;
        }
        if let Some(model) = &args.live {
            let path = (model != "embedded").then(|| std::path::Path::new(model.as_str()));
            for dev in &devices {
                bench_live_attack(dev, path, &args.sample, runs, &mut rows)?;
            }
        }
    }

    match std::fs::read_to_string(&torch_path) {
        Ok(text) => {
            let torch: TorchBench = serde_json::from_str(&text)
                .with_context(|| format!("{torch_path} is not a bench_torch.py result"))?;
            println!(
                "\nSide by side with PyTorch {}{} ({} threads; {torch_path}); ratio < 1 means Triscope is faster:",
                torch.torch,
                torch
                    .onnxruntime
                    .as_ref()
                    .map(|v| format!(" and ONNX Runtime {v}"))
                    .unwrap_or_default(),
                torch.threads
            );
            println!(
                "{:<10} {:<4} {:<16} {:<30} {:>3}  {:>9} {:>9} {:>7}  {:>8} {:>8}  {:>8} {:>7}  {:>8} {:>9}",
                "backend",
                "prec",
                "model",
                "operation",
                "b",
                "triscope",
                "pytorch",
                "ratio",
                "img/s",
                "torch",
                "/ t. f32",
                "/ ORT",
                "mem MiB",
                "torch MiB"
            );
            for row in rows.iter_mut() {
                let Some(t) = find(&torch.rows, row, &row.precision, "pytorch") else {
                    continue;
                };
                row.torch_median_secs = Some(t.median_secs);
                row.ratio_to_torch = Some(row.median_secs / t.median_secs);
                if row.precision != "f32" {
                    row.ratio_to_torch_f32 = find(&torch.rows, row, "f32", "pytorch")
                        .map(|f| row.median_secs / f.median_secs);
                }
                row.ratio_to_ort = find(&torch.rows, row, "f32", "onnxruntime")
                    .map(|o| row.median_secs / o.median_secs);
                let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_default();
                println!(
                    "{:<10} {:<4} {:<16} {:<30} {:>3}  {:>8.3}s {:>8.3}s {:>6.2}x  {:>8.1} {:>8.1}  {:>8} {:>7}  {:>8.0} {:>9.0}",
                    short(&row.backend),
                    row.precision,
                    format!("w{} {}px", row.base_width, row.resolution),
                    row.operation,
                    row.batch,
                    row.median_secs,
                    t.median_secs,
                    row.median_secs / t.median_secs,
                    row.batch as f64 / row.median_secs,
                    row.batch as f64 / t.median_secs,
                    ratio(row.ratio_to_torch_f32),
                    ratio(row.ratio_to_ort),
                    row.peak_rss_mib,
                    t.peak_rss_mib
                );
            }
        }
        Err(_) => println!(
            "\n(no {torch_path}: run `python3 tools/bench_torch.py --threads {threads} --out {torch_path}` for ratios to PyTorch)"
        ),
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("wrote {}", args.json.display());
    Ok(())
}
