//! Speed and memory of the core operations, side by side with PyTorch (not a test):
//!
//!     python3 tools/bench_torch.py --threads 2 --out bench_torch.json   # optional, PyTorch side
//!     cargo run --release --bin bench -- [--torch bench_torch.json] [--runs 5] [--wgpu]
//!
//! `--ops` instead times each distinct convolution of ResNet-50 at 224 (batch 1; raw conv, and
//! conv + BatchNorm + ReLU forward and forward + backward, fused and through burn's ops).
//! `--plain` runs the model rows on burn's own ops (the fused flex path off); `--skip-train`
//! leaves out the training step; `--narrow-only` the full-width model.
//!
//! Rows: forward (batch 1 and 8), forward + backward to the input (frozen weights), Grad-CAM on
//! layer4, PGD-10 (eps 8/255, alpha 2/255, random start), one training step (batch 8: forward,
//! backward with weight gradients, SGD update), for the full ResNet-50 at 224 and the narrow
//! test model (base width 8 at 128). Medians after one warm-up; peak resident memory per row
//! (Linux: VmHWM, reset through /proc/self/clear_refs before each row). With the PyTorch JSON
//! the table gains a Triscope / PyTorch column measured on the same machine. Writes
//! `bench.json` (or `--json PATH`).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use triscope::attack::{AttackConfig, AttackGoal, run_attack};
use triscope::device::ComputeDevice;
use triscope::explain::{TargetClass, grad_cam};
use triscope::model::{LayerId, ModelConfig, ResNet50};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    torch_median_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio_to_torch: Option<f64>,
}

#[derive(Deserialize)]
struct TorchBench {
    torch: String,
    threads: usize,
    rows: Vec<Row>,
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Forget the peak resident set so far (Linux); no-op elsewhere.
fn reset_peak_rss() {
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
    let mut measure = |operation: &str,
                       batch: usize,
                       f: &mut dyn FnMut() -> Result<()>|
     -> Result<()> {
        reset_peak_rss();
        let (median, min) = time_runs(runs, f)?;
        let peak = peak_rss_mib();
        println!(
            "{:<10} w{:<2} r{:<3} {:<28} b{:<2} median {:>8.3} s  min {:>8.3} s  peak {:>6.0} MiB",
            short(&dev.description),
            config.base_width,
            config.resolution,
            operation,
            batch,
            median,
            min,
            peak
        );
        rows.push(Row {
            backend: dev.description.clone(),
            operation: operation.to_string(),
            base_width: config.base_width,
            resolution: config.resolution,
            batch,
            median_secs: median,
            min_secs: min,
            peak_rss_mib: peak,
            runs,
            torch_median_secs: None,
            ratio_to_torch: None,
        });
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
            rows.push(Row {
                backend: dev.description.clone(),
                operation: format!("{kind} {shape}"),
                base_width: 64,
                resolution: 224,
                batch: 1,
                median_secs: median,
                min_secs: min,
                peak_rss_mib: f64::NAN,
                runs,
                torch_median_secs: None,
                ratio_to_torch: None,
            });
        }
    }
    println!("all convolutions of one ResNet-50 (weighted totals):");
    for (kind, total) in kinds.iter().zip(totals) {
        println!("  {kind:<32} {total:.3} s");
        rows.push(Row {
            backend: dev.description.clone(),
            operation: format!("{kind} all"),
            base_width: 64,
            resolution: 224,
            batch: 1,
            median_secs: total,
            min_secs: total,
            peak_rss_mib: f64::NAN,
            runs,
            torch_median_secs: None,
            ratio_to_torch: None,
        });
    }
    Ok(rows)
}

fn short(description: &str) -> String {
    if description.starts_with("CPU") {
        "flex".into()
    } else {
        "wgpu".into()
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = arg(&args, "--runs", 5);
    let json_path: String = arg(&args, "--json", "bench.json".to_string());
    let torch_path: String = arg(&args, "--torch", "bench_torch.json".to_string());
    let narrow_only = args.iter().any(|a| a == "--narrow-only");
    let skip_train = args.iter().any(|a| a == "--skip-train");
    // burn's own ops only, without the fused flex path (src/model/fast.rs): the before.
    let plain = args.iter().any(|a| a == "--plain");

    let mut setups = Vec::new();
    if !narrow_only {
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
    if args.iter().any(|a| a == "--wgpu") {
        match ComputeDevice::wgpu() {
            Ok(gpu) => devices.push(gpu),
            Err(e) => println!("wgpu: not available ({e})"),
        }
    }
    if args.iter().any(|a| a == "--ops") {
        rows.extend(bench_ops(&devices[0], runs)?);
    } else {
        for dev in &devices {
            for config in &setups {
                let mut run = || bench_model(dev, config, runs, skip_train, &mut rows);
                match plain {
                    true => triscope::model::fast::with_plain_path(run)?,
                    false => run()?,
                }
            }
        }
    }

    match std::fs::read_to_string(&torch_path) {
        Ok(text) => {
            let torch: TorchBench = serde_json::from_str(&text)
                .with_context(|| format!("{torch_path} is not a bench_torch.py result"))?;
            let key = |r: &Row| (r.operation.clone(), r.base_width, r.resolution, r.batch);
            let by_key: HashMap<_, _> = torch.rows.iter().map(|r| (key(r), r.clone())).collect();
            println!(
                "\nSide by side with PyTorch {} ({} threads; {torch_path}); ratio < 1 means Triscope is faster:",
                torch.torch, torch.threads
            );
            println!(
                "{:<10} {:<22} {:<28} {:>3}  {:>10} {:>10} {:>7}  {:>9} {:>9}",
                "backend",
                "model",
                "operation",
                "b",
                "triscope",
                "pytorch",
                "ratio",
                "mem MiB",
                "torch MiB"
            );
            for row in rows.iter_mut() {
                if let Some(t) = by_key.get(&key(row)) {
                    row.torch_median_secs = Some(t.median_secs);
                    row.ratio_to_torch = Some(row.median_secs / t.median_secs);
                    println!(
                        "{:<10} {:<22} {:<28} {:>3}  {:>9.3}s {:>9.3}s {:>6.2}x  {:>9.0} {:>9.0}",
                        short(&row.backend),
                        format!("ResNet-50 w{} {}px", row.base_width, row.resolution),
                        row.operation,
                        row.batch,
                        row.median_secs,
                        t.median_secs,
                        row.median_secs / t.median_secs,
                        row.peak_rss_mib,
                        t.peak_rss_mib
                    );
                }
            }
        }
        Err(_) => println!(
            "\n(no {torch_path}: run `python3 tools/bench_torch.py --threads {threads} --out {torch_path}` for ratios to PyTorch)"
        ),
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("cannot write {json_path}"))?;
    println!("wrote {json_path}");
    Ok(())
}
