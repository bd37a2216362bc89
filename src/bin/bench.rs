//! Timing of the core operations on each backend (not a test; run it in release):
//!
//!     cargo run --release --bin bench -- [--width 64] [--resolution 224] [--runs 5] [--wgpu]
//!
//! Prints a table of medians after one warm-up run and writes `bench.json` (or `--json PATH`).

use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use triscope::device::ComputeDevice;
use triscope::explain::{TargetClass, grad_cam};
use triscope::model::{LayerId, ModelConfig, ResNet50};

#[derive(Serialize)]
struct Row {
    backend: String,
    operation: String,
    base_width: usize,
    resolution: usize,
    batch: usize,
    median_secs: f64,
    min_secs: f64,
    runs: usize,
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?; // warm-up (allocations, kernel compilation)
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

fn sync(t: Tensor<2>) -> Result<()> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn bench_device(
    dev: &ComputeDevice,
    config: &ModelConfig,
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let model = ResNet50::init(config, 0, &dev.device)?.valid();
    let mut record = |operation: &str, batch: usize, (median, min): (f64, f64)| {
        println!(
            "{:<28} {:<34} batch {:>2}  median {:>8.3} s  min {:>8.3} s",
            dev.description, operation, batch, median, min
        );
        rows.push(Row {
            backend: dev.description.clone(),
            operation: operation.to_string(),
            base_width: config.base_width,
            resolution: config.resolution,
            batch,
            median_secs: median,
            min_secs: min,
            runs,
        });
    };
    for batch in [1usize, 8] {
        let t = time_runs(runs, || {
            sync(model.forward(input(batch, config, &dev.device)))
        })?;
        record("forward", batch, t);
    }
    let t = time_runs(runs, || {
        let x = input(1, config, &dev.device).autodiff().require_grad();
        let grads = model.forward(x.clone()).sum().backward();
        let g = x.grad(&grads).context("no input gradient")?;
        g.into_data()
            .try_into_vec_as::<f32>()
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    })?;
    record("forward + backward to input", 1, t);
    let t = time_runs(runs, || {
        grad_cam(
            &model,
            input(1, config, &dev.device),
            LayerId::Layer4,
            TargetClass::Predicted,
        )?;
        Ok(())
    })?;
    record("Grad-CAM layer4", 1, t);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut config = ModelConfig::ham10000();
    config.base_width = arg(&args, "--width", 64);
    config.resolution = arg(&args, "--resolution", 224);
    let runs: usize = arg(&args, "--runs", 5);
    let json_path: String = arg(&args, "--json", "bench.json".to_string());
    config.validate()?;
    println!(
        "ResNet-50 base width {} at {}x{}, {} runs after a warm-up",
        config.base_width, config.resolution, config.resolution, runs
    );
    let mut rows = Vec::new();
    bench_device(&ComputeDevice::cpu(), &config, runs, &mut rows)?;
    if args.iter().any(|a| a == "--wgpu") {
        match ComputeDevice::wgpu() {
            Ok(gpu) => bench_device(&gpu, &config, runs, &mut rows)?,
            Err(e) => println!("wgpu: not available ({e})"),
        }
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("cannot write {json_path}"))?;
    println!("wrote {json_path}");
    Ok(())
}
