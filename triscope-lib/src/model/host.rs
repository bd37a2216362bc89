//! Host-side reads of tensors and the numbers computed from them in more than one place:
//! a tensor's values, one row per sample, and the norms of a perturbation.

use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, TriscopeError};

/// Data read back from a device as f32; `what` names it in the error.
pub fn data_values(data: TensorData, what: &str) -> Result<Vec<f32>> {
    data.try_into_vec_as::<f32>()
        .map_err(|e| TriscopeError::Compute(format!("reading {what}: {e:?}")))
}

/// A tensor's values, flattened.
pub fn values<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    data_values(t.into_data(), what)
}

/// `flat` as `rows` rows of equal length (one per sample).
pub fn split_rows(flat: &[f32], rows: usize) -> Vec<Vec<f32>> {
    let per = (flat.len() / rows.max(1)).max(1);
    flat.chunks(per).map(<[f32]>::to_vec).collect()
}

/// A `[batch, ...]` tensor as one row per sample.
pub fn rows<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<Vec<f32>>> {
    let batch = t.dims()[0];
    Ok(split_rows(&values(t, what)?, batch))
}

/// `[batch, classes]` logits (of an autodiff graph or not) as one row per sample.
pub fn logit_rows(logits: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    rows(logits.inner(), "logits")
}

/// The size of a perturbation `adversarial - clean` (pixels in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerturbationNorms {
    pub linf: f32,
    pub l2: f32,
}

impl PerturbationNorms {
    pub fn of(adversarial: &[f32], clean: &[f32]) -> Self {
        let (linf, sq) = adversarial
            .iter()
            .zip(clean)
            .fold((0.0f32, 0.0f32), |(m, s), (a, c)| {
                let d = a - c;
                (m.max(d.abs()), s + d * d)
            });
        Self {
            linf,
            l2: sq.sqrt(),
        }
    }
}

/// The mean of each channel of a `[channels * plane]` activation row (global average
/// pooling on the host). `[channels]`.
pub fn channel_means(row: &[f32], channels: usize, plane: usize) -> Vec<f32> {
    (0..channels)
        .map(|c| row[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane.max(1) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_and_rows() {
        let n = PerturbationNorms::of(&[0.5, 0.2, 0.9], &[0.5, 0.5, 0.5]);
        assert!((n.linf - 0.4).abs() < 1e-6);
        assert!((n.l2 - 0.5).abs() < 1e-6);
        assert_eq!(
            split_rows(&[1.0, 2.0, 3.0, 4.0], 2),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
    }
}
