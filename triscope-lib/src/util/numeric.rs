//! Small vector math on host values: the index of the largest value, softmax and sigmoid.

/// Index of the largest value (first on ties; NaN never wins).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Softmax of `logits` (shifted by their maximum, so large logits do not overflow).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The logistic sigmoid of each value.
pub fn sigmoid(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_max() {
        assert_eq!(argmax(&[0.1, 0.9, 0.9, 0.2]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn softmax_and_sigmoid_by_hand() {
        let p = softmax(&[0.0, 2f32.ln(), 1000.0]);
        assert!((p[2] - 1.0).abs() < 1e-6 && p.iter().all(|v| v.is_finite()));
        let q = softmax(&[0.0, 2f32.ln()]);
        assert!((q[0] - 1.0 / 3.0).abs() < 1e-6 && (q[1] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(sigmoid(&[0.0]), vec![0.5]);
    }
}
