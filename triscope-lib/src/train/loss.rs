//! Training losses: weighted cross-entropy, BCE for multi-label, PGD adversarial training
//! (Madry et al.) and TRADES (Zhang et al., reference implementation `trades.py`).
//!
//! Conventions follow PyTorch so the values can be checked against it
//! (`tools/make_train_fixtures.py`): `F.cross_entropy(logits, y, weight=w)` is
//! `sum_i w[y_i] * CE_i / sum_i w[y_i]`; `F.binary_cross_entropy_with_logits(z, t, weight=w)`
//! is the mean over samples and findings of `w[c] * BCE_ic`; TRADES' KL term is
//! `nn.KLDivLoss(reduction='sum')(log_softmax(f(x')), softmax(f(x))) / batch`.

use std::sync::atomic::AtomicBool;

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::attack::{AttackConfig, AttackGoal, Classify, run_attack};
use crate::error::{Result, TriscopeError};
use crate::train::config::CamMap;
use crate::util::rng::SplitMix64;

/// `[b, classes]` one-hot rows of `labels`.
fn one_hot(labels: &[usize], classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0.0f32; labels.len() * classes];
    for (i, &k) in labels.iter().enumerate() {
        v[i * classes + k] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [labels.len(), classes]), device)
}

/// Weighted mean cross-entropy with label smoothing, PyTorch's definition
/// (`F.cross_entropy(logits, y, weight=w, label_smoothing=s)`): `(1 - s)` times the weighted
/// NLL plus `s / classes` times `sum_i sum_k w[k] * -log p_ik`, both divided by
/// `sum_i w[y_i]`. `logits`: `[b, classes]`; `weights`: one per class (None = all 1);
/// `smoothing` in [0, 1). Returns a `[1]` tensor.
pub fn cross_entropy(
    logits: Tensor<2>,
    labels: &[usize],
    weights: Option<&[f32]>,
    smoothing: f32,
) -> Tensor<1> {
    let [_, c] = logits.dims();
    let device = logits.device();
    let class_w: Vec<f32> = (0..c).map(|k| weights.map_or(1.0, |w| w[k])).collect();
    let total_weight: f32 = labels
        .iter()
        .map(|&y| class_w[y])
        .sum::<f32>()
        .max(f32::MIN_POSITIVE);
    let log_p = log_softmax(logits, 1); // [b, classes]
    let class_w = Tensor::<2>::from_data(TensorData::new(class_w, [1, c]), &device);
    let weighted = log_p * class_w; // [b, classes]
    let nll = (weighted.clone() * one_hot(labels, c, &device)).sum().neg(); // [1]
    let loss = if smoothing > 0.0 {
        let uniform = weighted.sum().neg(); // [1]
        nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing / c as f32)
    } else {
        nll
    };
    loss.div_scalar(total_weight)
}

/// The loss of a MixUp / CutMix batch ([`super::mix`]): `lam * CE(z, y) + (1 - lam) *
/// CE(z, roll(y))`, each term [`cross_entropy`] with its weights and smoothing (the mixup
/// paper's `mixup_criterion`). Without weights and smoothing it equals PyTorch's
/// `F.cross_entropy` on torchvision's mixed soft labels. `logits`: `[b, classes]`; returns `[1]`.
pub fn mixed_cross_entropy(
    logits: Tensor<2>,
    labels: &[usize],
    lam: f32,
    weights: Option<&[f32]>,
    smoothing: f32,
) -> Tensor<1> {
    let partners = super::mix::rolled(labels);
    cross_entropy(logits.clone(), labels, weights, smoothing).mul_scalar(lam)
        + cross_entropy(logits, &partners, weights, smoothing).mul_scalar(1.0 - lam)
}

/// Mean binary cross-entropy with logits over samples and findings, each finding weighted.
/// `logits`: `[b, findings]`; `targets`: one 0/1 row per sample. Returns `[1]`.
pub fn binary_cross_entropy(
    logits: Tensor<2>,
    targets: &[Vec<f32>],
    weights: Option<&[f32]>,
) -> Tensor<1> {
    let [b, c] = logits.dims();
    let device = logits.device();
    let flat: Vec<f32> = targets.iter().flatten().copied().collect();
    let y = Tensor::<2>::from_data(TensorData::new(flat, [b, c]), &device);
    // BCE = -(y log s(z) + (1 - y) log s(-z))
    let per = (log_sigmoid(logits.clone()) * y.clone()
        + log_sigmoid(logits.neg()) * (y.neg() + 1.0))
        .neg(); // [b, c]
    let w: Vec<f32> = (0..c).map(|k| weights.map_or(1.0, |w| w[k])).collect();
    let w = Tensor::<2>::from_data(TensorData::new(w, [1, c]), &device);
    (per * w).mean().reshape([1])
}

/// `sum(p_nat * (log p_nat - log p_adv)) / batch`: TRADES' robust term (batch-mean KL).
/// Both arguments are logits `[b, classes]`; gradients flow through both, as in the reference.
pub fn kl_batchmean(logits_natural: Tensor<2>, logits_adv: Tensor<2>) -> Tensor<1> {
    let [b, _] = logits_natural.dims();
    let log_p = log_softmax(logits_natural, 1); // [b, classes]
    let log_q = log_softmax(logits_adv, 1);
    (log_p.clone().exp() * (log_p - log_q))
        .sum()
        .div_scalar(b as f32)
}

/// L-inf PGD settings of the inner maximisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InnerAttack {
    /// Radius in [0, 1] pixel units.
    pub eps_linf: f32,
    pub steps: usize,
    pub alpha: f32,
}

/// TRADES' inner maximisation, as the reference: start at `x + 0.001 * N(0, 1)`, then `steps`
/// times: gradient of `KL(p(x) || p(x'))` (summed) w.r.t. x', `x' += alpha * sign(grad)`,
/// project to the eps-ball around x, clamp to [0, 1]. `model` must be in inference mode (the
/// reference calls `model.eval()`); `x` is `[b, C, H, W]` on a plain device. The normal noise
/// comes from `rng` (host-side, identical on every backend).
pub fn trades_adversarial(
    model: &dyn Classify,
    x: &Tensor<4>,
    attack: &InnerAttack,
    rng: &mut SplitMix64,
) -> Result<Tensor<4>> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let noise: Vec<f32> = (0..b * c * h * w)
        .map(|_| 0.001 * rng.next_normal())
        .collect();
    let noise = Tensor::<4>::from_data(TensorData::new(noise, [b, c, h, w]), &device);
    let log_p = log_softmax(model.logits(x.clone()), 1).detach(); // [b, classes]
    let p = log_p.clone().exp();
    let lower = x.clone() - attack.eps_linf; // [b, C, H, W]
    let upper = x.clone() + attack.eps_linf;
    let mut adv = x.clone() + noise;
    for _ in 0..attack.steps {
        let leaf = adv.clone().autodiff().require_grad();
        let log_q = log_softmax(model.logits(leaf.clone()), 1); // [b, classes]
        let kl = (p.clone() * (log_p.clone() - log_q)).sum();
        let grads = kl.backward();
        let grad = leaf
            .grad(&grads)
            .ok_or_else(|| TriscopeError::Compute("no gradient reached the input".into()))?;
        adv = (adv + grad.sign() * attack.alpha)
            .max_pair(lower.clone())
            .min_pair(upper.clone())
            .clamp(0.0, 1.0);
    }
    Ok(adv.clamp(0.0, 1.0))
}

/// Madry's PGD-AT inner maximisation: L-inf PGD from a uniform random start in the eps-ball,
/// ascending the cross-entropy (BCE for multi-label), projected and clamped every step.
/// `model` in inference mode; `x` on a plain device.
pub fn pgd_adversarial(
    model: &dyn Classify,
    x: &Tensor<4>,
    goal: &AttackGoal,
    attack: &InnerAttack,
    seed: u64,
    cancel: &AtomicBool,
) -> Result<Tensor<4>> {
    let config = AttackConfig {
        eps_linf: attack.eps_linf,
        alpha: attack.alpha,
        seed,
        ..AttackConfig::pgd(attack.steps)
    };
    Ok(run_attack(model, x.clone(), goal, &config, &mut |_| {}, cancel)?.adversarial)
}

/// The parts of a training loss, kept apart for the log.
pub struct LossParts {
    /// What is minimised. `[1]`.
    pub total: Tensor<1>,
    /// The clean (natural) loss; for PGD-AT the adversarial CE. `[1]`.
    pub natural: Tensor<1>,
    /// TRADES' KL term (unscaled by beta), if any. `[1]`.
    pub robust: Option<Tensor<1>>,
    /// The map's share outside the lesion ([`cam_outside_share`]; unweighted), if any. `[1]`.
    pub cam_outside: Option<Tensor<1>>,
}

/// The lesion's share of each cell of a `rows x cols` grid laid over `[n, height, width]`
/// masks (row-major, values in [0, 1]): the mean of the mask over the cell's pixels, pixel
/// `(y, x)` lying in cell `(floor(y * rows / height), floor(x * cols / width))` (torch's
/// `adaptive_avg_pool2d` where the sides divide evenly). `[n, rows, cols]`.
pub fn cell_shares(
    masks: &[f32],
    n: usize,
    (height, width): (usize, usize),
    (rows, cols): (usize, usize),
) -> Vec<f32> {
    let mut sum = vec![0.0f32; n * rows * cols];
    let mut count = vec![0u32; rows * cols];
    for y in 0..height {
        let r = (y * rows / height.max(1)).min(rows - 1);
        for x in 0..width {
            let c = (x * cols / width.max(1)).min(cols - 1);
            count[r * cols + c] += 1;
            for i in 0..n {
                sum[(i * rows + r) * cols + c] += masks[(i * height + y) * width + x];
            }
        }
    }
    for (k, s) in sum.iter_mut().enumerate() {
        *s /= count[k % (rows * cols)].max(1) as f32;
    }
    sum
}

/// The mean over the batch of the share of each image's class activation map that lies
/// outside its lesion: with `A` layer4's `features` `[b, K, h, w]` and `fc_weight`
/// `[K, classes]` (burn's layout), the map of label `y` is `M = ReLU(sum_k w[k, y] A_k)`
/// (Zhou et al.'s CAM; under global average pooling the same map as layer4's Grad-CAM up to
/// a factor), and the share is `1 - sum(M * inside) / sum(M)`, `inside` `[b, h, w]` being the
/// lesion's share of each cell ([`cell_shares`]). An image whose map is zero everywhere counts
/// as all outside. With [`CamMap::Softplus`] the map is `softplus(sum_k w[k, y] A_k)` instead,
/// which keeps a gradient where the ReLU map is zero everywhere. `[1]`.
pub fn cam_outside_share(
    features: Tensor<4>,
    fc_weight: Tensor<2>,
    labels: &[usize],
    inside: Tensor<3>,
    positive: CamMap,
) -> Tensor<1> {
    let [b, k, h, w] = features.dims();
    let [_, classes] = fc_weight.dims();
    let device = features.device();
    let label_w = one_hot(labels, classes, &device).matmul(fc_weight.transpose()); // [b, K]
    let maps = (features * label_w.reshape([b, k, 1, 1])).sum_dim(1); // [b, 1, h, w]
    let maps = maps.reshape([b, h * w]); // [b, h*w]
    let maps = match positive {
        CamMap::Relu => burn::tensor::activation::relu(maps),
        CamMap::Softplus => burn::tensor::activation::softplus(maps, 1.0),
    };
    let inside = inside.reshape([b, h * w]);
    let total = maps.clone().sum_dim(1).add_scalar(1e-12); // [b, 1]
    let within = (maps * inside).sum_dim(1); // [b, 1]
    (within / total).neg().add_scalar(1.0).mean() // [1]
}

/// TRADES' outer loss on a model in training mode: `CE(f(x), y) + beta * KL(p(x) || p(x'))`
/// (the CE label-smoothed by `smoothing`),
/// with two forward passes (as the reference). Returns the parts and both logits.
pub fn trades_outer(
    model: &dyn Classify,
    x: Tensor<4>,
    x_adv: Tensor<4>,
    labels: &[usize],
    weights: Option<&[f32]>,
    smoothing: f32,
    beta: f32,
) -> (LossParts, Tensor<2>, Tensor<2>) {
    let logits = model.logits(x); // [b, classes]
    let logits_adv = model.logits(x_adv);
    let natural = cross_entropy(logits.clone(), labels, weights, smoothing);
    let robust = kl_batchmean(logits.clone(), logits_adv.clone());
    let total = natural.clone() + robust.clone().mul_scalar(beta);
    (
        LossParts {
            total,
            natural,
            robust: Some(robust),
            cam_outside: None,
        },
        logits,
        logits_adv,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(t: Tensor<1>) -> f32 {
        t.into_data().try_into_vec_as::<f32>().unwrap()[0]
    }

    #[test]
    fn ce_matches_hand_computation() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.5, 0.0, 0.0, 3.0], [2, 3]),
            &device,
        );
        let lse = |v: &[f32]| v.iter().map(|x| x.exp()).sum::<f32>().ln();
        let ce0 = lse(&[1.0, 2.0, 0.5]) - 1.0;
        let ce1 = lse(&[0.0, 0.0, 3.0]) - 3.0;
        let plain = value(cross_entropy(logits.clone(), &[0, 2], None, 0.0));
        assert!((plain - (ce0 + ce1) / 2.0).abs() < 1e-5);
        let w = [2.0, 1.0, 0.5];
        let weighted = value(cross_entropy(logits, &[0, 2], Some(&w), 0.0));
        assert!((weighted - (2.0 * ce0 + 0.5 * ce1) / 2.5).abs() < 1e-5);
    }

    #[test]
    fn label_smoothing_matches_pytorch() {
        // torch 2.15: z = [[1, -0.5, 0.25], [0.3, 2, -1], [-0.2, 0.1, 0.4]], y = [0, 2, 1],
        // w = [2, 1, 0.5]; F.cross_entropy(z, y, label_smoothing=0.1) and with weight=w.
        let device = Device::flex();
        let z = vec![1.0f32, -0.5, 0.25, 0.3, 2.0, -1.0, -0.2, 0.1, 0.4];
        let logits = Tensor::<2>::from_data(TensorData::new(z, [3, 3]), &device);
        let y = [0, 2, 1];
        let w = [2.0, 1.0, 0.5];
        let plain = value(cross_entropy(logits.clone(), &y, None, 0.1));
        assert!((plain - 1.599_017_9).abs() < 1e-5, "{plain}");
        let weighted = value(cross_entropy(logits.clone(), &y, Some(&w), 0.1));
        assert!((weighted - 1.105_265_4).abs() < 1e-5, "{weighted}");
        let unsmoothed = value(cross_entropy(logits, &y, Some(&w), 0.0));
        assert!((unsmoothed - 1.082_529_2).abs() < 1e-5, "{unsmoothed}");
    }

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        let device = Device::flex();
        let a = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0], [1, 3]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![3.0f32, 2.0, 1.0], [1, 3]), &device);
        assert!(value(kl_batchmean(a.clone(), a.clone())).abs() < 1e-6);
        assert!(value(kl_batchmean(a, b)) > 0.1);
    }
}
