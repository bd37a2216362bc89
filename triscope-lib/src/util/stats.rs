//! Small statistics shared by the metrics.

/// Average ranks (1-based) of `v`, ties sharing their mean rank (as `scipy.stats.rankdata`).
pub fn average_ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Mean and sample standard deviation (n - 1); NaN for fewer than two values.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Holm-Bonferroni adjusted p-values (step-down; as statsmodels' `multipletests(p,
/// method="holm")`): a test is significant at family-wise error `alpha` when its adjusted
/// p-value is below `alpha`. NaN p-values stay NaN and do not count in the family.
pub fn holm_adjust(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| !p_values[i].is_nan())
        .collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running_max = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p_values[i]).min(1.0);
        running_max = running_max.max(scaled);
        adjusted[i] = running_max;
    }
    adjusted
}

/// Student's two-sample t-test with pooled variance, two-sided, as
/// `scipy.stats.ttest_ind(a, b)`: `(t, p)`. NaN when a group has fewer than two values or
/// both groups are constant and equal.
pub fn ttest_ind(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.len() < 2 || b.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ma, sa) = mean_std(a);
    let (mb, sb) = mean_std(b);
    let df = na + nb - 2.0;
    let pooled = ((na - 1.0) * sa * sa + (nb - 1.0) * sb * sb) / df;
    let se = (pooled * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 {
        if ma == mb {
            return (f64::NAN, f64::NAN);
        }
        return (f64::INFINITY.copysign(ma - mb), 0.0);
    }
    let t = (ma - mb) / se;
    (t, student_t_two_sided_p(t, df))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom:
/// `I_{df / (df + t^2)}(df / 2, 1 / 2)`.
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t.is_nan() { f64::NAN } else { 0.0 };
    }
    regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// `I_x(a, b)` by Lentz's continued fraction (Numerical Recipes, `betai`).
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut acc = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        acc += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + acc.ln()
}

/// Serde: JSON has no NaN (serde_json writes `null`); read `null` back as NaN.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Serde default: a missing number reads as NaN (not measured), never as 0.
pub fn nan() -> f64 {
    f64::NAN
}

/// Serde: [`f64_or_nan`] for each element.
pub fn vec_f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    use serde::Deserialize;
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ties_share_ranks() {
        assert_eq!(
            super::average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn t_test_matches_scipy() {
        // scipy.stats.ttest_ind (scipy 1.17).
        let (t, p) = super::ttest_ind(&[0.6, 0.7, 0.8, 0.65, 0.9], &[0.5, 0.4, 0.55, 0.45, 0.6]);
        assert!((t - 3.570_292_418_249_129).abs() < 1e-10, "{t}");
        assert!((p - 0.007_290_568_113_605_194).abs() < 1e-10, "{p}");
        let (t, p) = super::ttest_ind(&[1.0, 1.0, 0.9], &[0.2, 0.5, 0.3, 0.1]);
        assert!((t - 6.598_950_228_738_308).abs() < 1e-10, "{t}");
        assert!((p - 0.001_201_158_244_634_856_1).abs() < 1e-10, "{p}");
        // scipy.stats.t.sf(|t|, df) * 2
        let cases = [
            (2.0, 7.0, 0.085_619_328_562_976_05),
            (0.3, 3.0, 0.783_763_292_039_919),
            (5.0, 30.0, 2.329_668_546_700_78e-5),
        ];
        for (t, df, want) in cases {
            let p = super::student_t_two_sided_p(t, df);
            assert!(
                (p - want).abs() < 1e-9 * want.max(1e-3),
                "t {t} df {df}: {p} vs {want}"
            );
        }
        // Identical groups: no evidence either way.
        let (_, p) = super::ttest_ind(&[0.5, 0.6, 0.7], &[0.5, 0.6, 0.7]);
        assert!((p - 1.0).abs() < 1e-12, "{p}");
        assert!(super::ttest_ind(&[1.0], &[0.0, 1.0]).1.is_nan());
    }

    #[test]
    fn holm_matches_a_hand_worked_family() {
        // m = 4, sorted p = 0.01, 0.02, 0.03, 0.5: 4*0.01 = 0.04, 3*0.02 = 0.06,
        // max(0.06, 2*0.03) = 0.06, max(0.06, 0.5) = 0.5; back in the input order.
        let adjusted = super::holm_adjust(&[0.03, 0.5, 0.01, f64::NAN, 0.02]);
        let want = [0.06, 0.5, 0.04, f64::NAN, 0.06];
        for (a, w) in adjusted.iter().zip(want) {
            assert!(
                a.is_nan() && w.is_nan() || (a - w).abs() < 1e-12,
                "{adjusted:?}"
            );
        }
        // Capped at 1, and a single test is left alone.
        assert_eq!(super::holm_adjust(&[0.4, 0.6]), vec![0.8, 0.8]);
        assert_eq!(super::holm_adjust(&[0.7]), vec![0.7]);
        assert!(super::holm_adjust(&[]).is_empty());
    }
}
