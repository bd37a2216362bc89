//! ResNet-50 in torchvision layout (v1.5: stride on the 3x3 conv of each bottleneck).
//!
//! Parameter names follow torchvision's state dict (`conv1.weight`, `layer3.2.bn1.running_var`,
//! `fc.weight`, ...), so weights move to and from PyTorch without renaming. The model takes
//! pixels in [0, 1]; the mean/std normalisation is the first step of its forward, so that
//! every gradient (Grad-CAM, attacks) lives in pixel space.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, PaddingConfig2d};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::{ColorConstancy, ModelConfig, SHADES_OF_GRAY_P};
use super::fast::{Epilogue, conv_bn};
use super::layers::LayerId;
use super::source::{Init, ParamBuilder};
use crate::error::{Result, TriscopeError};

/// Bottleneck blocks per stage, as in ResNet-50.
pub const STAGE_BLOCKS: [usize; 4] = [3, 4, 6, 3];
/// Channel expansion of the bottleneck's last 1x1 conv.
pub const EXPANSION: usize = 4;
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Shades of Gray colour constancy (Finlayson & Trezzi 2004), per image, as the ISIC
/// 2018-2019 winning entries applied it: the illuminant `e_c` is the Minkowski p-mean of channel
/// c, and each channel is multiplied by `|e| / (e_c sqrt(C))`, which turns the illuminant grey
/// at its own length; the result is clipped at 1. Differentiable, so attacks and attributions
/// see through it. `[batch, C, H, W]` in [0, 1] -> the same.
pub fn shades_of_gray(x: Tensor<4>) -> Tensor<4> {
    let channels = x.dims()[1];
    // A black channel has no illuminant; the floor keeps the root's gradient finite.
    let illuminant = x
        .clone()
        .powf_scalar(SHADES_OF_GRAY_P)
        .mean_dims(&[2, 3])
        .clamp_min(1e-12)
        .powf_scalar(1.0 / SHADES_OF_GRAY_P); // [b, C, 1, 1]
    let length = illuminant.clone().powf_scalar(2.0).sum_dim(1).sqrt(); // [b, 1, 1, 1]
    let gain = length / (illuminant * (channels as f32).sqrt()); // [b, C, 1, 1]
    (x * gain).clamp_max(1.0)
}

/// The 1x1 conv + BN that matches the shortcut to the block's output.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1 -> BN, plus the shortcut.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
    pub downsample: Option<Downsample>,
}

impl Bottleneck {
    /// `[batch, C_in, H, W]` -> `[batch, 4 * planes, H / stride, W / stride]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = conv_bn(&self.conv1, &self.bn1, x.clone(), Epilogue::Relu);
        let out = conv_bn(&self.conv2, &self.bn2, out, Epilogue::Relu);
        let identity = match &self.downsample {
            Some(ds) => conv_bn(&ds.conv, &ds.bn, x, Epilogue::None),
            None => x,
        };
        conv_bn(&self.conv3, &self.bn3, out, Epilogue::AddRelu(identity))
    }
}

/// ResNet-50 with a linear head; see the module docs for the layout.
#[derive(Module, Debug)]
pub struct ResNet50 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layer1: Vec<Bottleneck>,
    pub layer2: Vec<Bottleneck>,
    pub layer3: Vec<Bottleneck>,
    pub layer4: Vec<Bottleneck>,
    pub dropout: Dropout,
    pub fc: Linear,
    #[module(skip)]
    pub config: ModelConfig,
}

/// Everything one forward pass yields: no second pass is needed for activations.
#[derive(Debug, Clone)]
pub struct ForwardTaps {
    /// Outputs of layer1..layer4. `[batch, 4w, H/4, W/4]` ... `[batch, 32w, H/32, W/32]`.
    pub layers: [Tensor<4>; 4],
    /// Globally average-pooled layer4. `[batch, 32w]` (2048 at full width).
    pub embedding: Tensor<2>,
    /// Raw scores of the head. `[batch, num_classes]`.
    pub logits: Tensor<2>,
}

impl ResNet50 {
    /// Build the network, taking every parameter from `params` (a checkpoint or an
    /// initialiser). All missing or mis-shaped keys are reported together.
    pub fn build(config: &ModelConfig, params: &mut ParamBuilder<'_>) -> Result<Self> {
        config.validate()?;
        let w = config.base_width;
        let conv1 = params.conv("conv1", config.in_channels, w, 7, 2, 3);
        let bn1 = params.batch_norm("bn1", w);
        let mut in_planes = w;
        let mut stages: Vec<Vec<Bottleneck>> = Vec::with_capacity(4);
        for (stage, &blocks) in STAGE_BLOCKS.iter().enumerate() {
            let planes = w << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let mut layer = Vec::with_capacity(blocks);
            for block in 0..blocks {
                let prefix = format!("layer{}.{}", stage + 1, block);
                let block_stride = if block == 0 { stride } else { 1 };
                let downsample = (block == 0
                    && (block_stride != 1 || in_planes != planes * EXPANSION))
                    .then(|| Downsample {
                        conv: params.conv(
                            &format!("{prefix}.downsample.0"),
                            in_planes,
                            planes * EXPANSION,
                            1,
                            block_stride,
                            0,
                        ),
                        bn: params
                            .batch_norm(&format!("{prefix}.downsample.1"), planes * EXPANSION),
                    });
                layer.push(Bottleneck {
                    conv1: params.conv(&format!("{prefix}.conv1"), in_planes, planes, 1, 1, 0),
                    bn1: params.batch_norm(&format!("{prefix}.bn1"), planes),
                    conv2: params.conv(
                        &format!("{prefix}.conv2"),
                        planes,
                        planes,
                        3,
                        block_stride,
                        1,
                    ),
                    bn2: params.batch_norm(&format!("{prefix}.bn2"), planes),
                    conv3: params.conv(
                        &format!("{prefix}.conv3"),
                        planes,
                        planes * EXPANSION,
                        1,
                        1,
                        0,
                    ),
                    bn3: params.batch_norm(&format!("{prefix}.bn3"), planes * EXPANSION),
                    downsample,
                });
                in_planes = planes * EXPANSION;
            }
            stages.push(layer);
        }
        let fc = params.linear("fc", in_planes, config.num_classes);
        params.finish()?;
        let mut stages = stages.into_iter();
        let mut next = || stages.next().unwrap_or_default();
        Ok(Self {
            conv1,
            bn1,
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            dropout: DropoutConfig::new(config.dropout).init(),
            fc,
            config: config.clone(),
        })
    }

    /// A freshly initialised network (torchvision's initialisation), deterministic in `seed`.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut source = super::source::SeededInit::new(seed);
        let mut builder = ParamBuilder::new(&mut source, device.clone());
        Self::build(config, &mut builder)
    }

    /// Stages as a slice, layer1 first.
    pub fn stages(&self) -> [&[Bottleneck]; 4] {
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
    }

    /// The model's colour constancy (if any), then `(x - mean) / std` per channel; `x` holds
    /// pixels in [0, 1]. `[batch, C, H, W]`.
    pub fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match self.config.color_constancy {
            ColorConstancy::None => x,
            ColorConstancy::ShadesOfGray => shades_of_gray(x),
        };
        let device = x.device();
        let c = self.config.in_channels;
        let mean = Tensor::<4>::from_data(
            TensorData::new(self.config.mean.clone(), [1, c, 1, 1]),
            &device,
        );
        let inv_std: Vec<f32> = self.config.std.iter().map(|s| 1.0 / s).collect();
        let inv_std = Tensor::<4>::from_data(TensorData::new(inv_std, [1, c, 1, 1]), &device);
        (x - mean) * inv_std
    }

    /// Stem: conv 7x7/2, BN, ReLU, max-pool 3x3/2. `[b, C, H, W]` -> `[b, w, H/4, W/4]`.
    fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv_bn(&self.conv1, &self.bn1, x, Epilogue::Relu);
        let pool = MaxPoolOptions {
            kernel_size: [3, 3],
            stride: [2, 2],
            padding: [(1, 1), (1, 1)],
            dilation: [1, 1],
            ceil_mode: false,
        };
        max_pool2d(x, pool)
    }

    /// One pass returning logits, layer1..layer4 and the embedding.
    ///
    /// With `grad_at = Some(layer)`, that layer's output becomes an autodiff leaf that
    /// requires a gradient (the rest of the pass is recorded from there on), so that
    /// `taps.layers[layer].grad(&logits.backward())` gives d(logit)/d(activation) as
    /// Grad-CAM needs, without a second forward and without recording the prefix.
    pub fn forward_taps(&self, pixels: Tensor<4>, grad_at: Option<LayerId>) -> ForwardTaps {
        let run = |x: Tensor<4>, layer: LayerId| -> Tensor<4> {
            let stage = self.stages()[layer.index()];
            let x = stage.iter().fold(x, |x, block| block.forward(x));
            if grad_at == Some(layer) {
                x.detach().autodiff().require_grad()
            } else {
                x
            }
        };
        let x = self.stem(self.normalize(pixels)); // [b, w, H/4, W/4]
        let l1 = run(x, LayerId::Layer1); // [b, 4w, H/4, W/4]
        let l2 = run(l1.clone(), LayerId::Layer2); // [b, 8w, H/8, W/8]
        let l3 = run(l2.clone(), LayerId::Layer3); // [b, 16w, H/16, W/16]
        let l4 = run(l3.clone(), LayerId::Layer4); // [b, 32w, H/32, W/32]
        let [b, c, _, _] = l4.dims();
        let embedding = l4.clone().mean_dims(&[2, 3]).reshape([b, c]); // [b, 32w]
        let logits = self.head(embedding.clone()); // [b, classes]
        ForwardTaps {
            layers: [l1, l2, l3, l4],
            embedding,
            logits,
        }
    }

    /// Logits only. `[batch, C, H, W]` pixels in [0, 1] -> `[batch, num_classes]`.
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<2> {
        self.head(self.embedding(pixels))
    }

    /// Globally average-pooled layer4. `[batch, C, H, W]` pixels -> `[batch, 32w]`.
    pub fn embedding(&self, pixels: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem(self.normalize(pixels));
        for stage in self.stages() {
            for block in stage {
                x = block.forward(x);
            }
        }
        let [b, c, _, _] = x.dims();
        x.mean_dims(&[2, 3]).reshape([b, c])
    }

    /// The classifier on an embedding: dropout, then the linear layer. `[batch, 32w]` ->
    /// `[batch, num_classes]`.
    pub fn head(&self, embedding: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(embedding))
    }

    /// Every BatchNorm of the network, in torchvision's order.
    pub fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut out = vec![&mut self.bn1];
        for stage in [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ] {
            for block in stage.iter_mut() {
                out.extend([&mut block.bn1, &mut block.bn2, &mut block.bn3]);
                if let Some(ds) = &mut block.downsample {
                    out.push(&mut ds.bn);
                }
            }
        }
        out
    }

    /// Every parameter and buffer under its torchvision key, in torchvision's order and
    /// layout (`fc.weight` as `[out, in]`). BatchNorm's `num_batches_tracked` is not a tensor
    /// here; the exporter adds it.
    pub fn named_tensors(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        push_conv(&mut out, "conv1", &self.conv1);
        push_bn(&mut out, "bn1", &self.bn1);
        for (s, stage) in self.stages().into_iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                let p = format!("layer{}.{}", s + 1, i);
                push_conv(&mut out, &format!("{p}.conv1"), &block.conv1);
                push_bn(&mut out, &format!("{p}.bn1"), &block.bn1);
                push_conv(&mut out, &format!("{p}.conv2"), &block.conv2);
                push_bn(&mut out, &format!("{p}.bn2"), &block.bn2);
                push_conv(&mut out, &format!("{p}.conv3"), &block.conv3);
                push_bn(&mut out, &format!("{p}.bn3"), &block.bn3);
                if let Some(ds) = &block.downsample {
                    push_conv(&mut out, &format!("{p}.downsample.0"), &ds.conv);
                    push_bn(&mut out, &format!("{p}.downsample.1"), &ds.bn);
                }
            }
        }
        // burn stores the linear weight as [in, out]; torchvision as [out, in].
        let fc_w = self.fc.weight.val().transpose();
        out.push(NamedTensor::new("fc.weight", fc_w.to_data()));
        if let Some(bias) = &self.fc.bias {
            out.push(NamedTensor::new("fc.bias", bias.val().to_data()));
        }
        out.into_iter().collect()
    }
}

/// One exported tensor: its torchvision key, shape and f32 values (row-major).
#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub key: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// True for BatchNorm layers (the exporter adds `num_batches_tracked` after `running_var`).
    pub is_bn_running_var: bool,
}

impl NamedTensor {
    fn new(key: &str, data: TensorData) -> Result<Self> {
        let shape = data.shape().to_vec();
        let values = data
            .try_into_vec_as::<f32>()
            .map_err(|e| TriscopeError::Compute(format!("reading {key}: {e:?}")))?;
        Ok(Self {
            key: key.to_string(),
            shape,
            values,
            is_bn_running_var: false,
        })
    }
}

fn push_conv(out: &mut Vec<Result<NamedTensor>>, prefix: &str, conv: &Conv2d) {
    out.push(NamedTensor::new(
        &format!("{prefix}.weight"),
        conv.weight.val().to_data(),
    ));
}

fn push_bn(out: &mut Vec<Result<NamedTensor>>, prefix: &str, bn: &BatchNorm) {
    out.push(NamedTensor::new(
        &format!("{prefix}.weight"),
        bn.gamma.val().to_data(),
    ));
    out.push(NamedTensor::new(
        &format!("{prefix}.bias"),
        bn.beta.val().to_data(),
    ));
    out.push(NamedTensor::new(
        &format!("{prefix}.running_mean"),
        bn.running_mean.value().to_data(),
    ));
    let var = NamedTensor::new(
        &format!("{prefix}.running_var"),
        bn.running_var.value().to_data(),
    );
    out.push(var.map(|mut v| {
        v.is_bn_running_var = true;
        v
    }));
}

impl ParamBuilder<'_> {
    /// A bias-free conv (all ResNet convs are) with square kernel, stride and padding.
    pub fn conv(
        &mut self,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Conv2d {
        let weight = self.tensor::<4>(
            &format!("{prefix}.weight"),
            [c_out, c_in, k, k],
            Init::KaimingNormalFanOut,
        );
        Conv2d {
            weight: Param::from_tensor(weight),
            bias: None,
            stride: [stride, stride],
            kernel_size: [k, k],
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
        }
    }

    /// BatchNorm2d with torchvision's eps and momentum.
    pub fn batch_norm(&mut self, prefix: &str, n: usize) -> BatchNorm {
        let gamma = self.tensor::<1>(&format!("{prefix}.weight"), [n], Init::Ones);
        let beta = self.tensor::<1>(&format!("{prefix}.bias"), [n], Init::Zeros);
        let mean = self.tensor::<1>(&format!("{prefix}.running_mean"), [n], Init::Zeros);
        let var = self.tensor::<1>(&format!("{prefix}.running_var"), [n], Init::Ones);
        self.optional_counter(&format!("{prefix}.num_batches_tracked"));
        BatchNorm {
            gamma: Param::from_tensor(gamma),
            beta: Param::from_tensor(beta),
            training: Param::from_bool(true),
            running_mean: RunningState::new(mean),
            running_var: RunningState::new(var),
            momentum: BN_MOMENTUM,
            epsilon: BN_EPS,
        }
    }

    /// Linear head; the source holds torchvision's `[out, in]`, burn wants `[in, out]`.
    pub fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize) -> Linear {
        let bound = 1.0 / (d_in as f32).sqrt();
        let weight = self.tensor::<2>(
            &format!("{prefix}.weight"),
            [d_out, d_in],
            Init::Uniform(bound),
        );
        let bias = self.tensor::<1>(&format!("{prefix}.bias"), [d_out], Init::Uniform(bound));
        Linear {
            weight: Param::from_tensor(weight.transpose()),
            bias: Some(Param::from_tensor(bias)),
        }
    }
}
