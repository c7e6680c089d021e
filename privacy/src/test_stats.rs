//! Statistical helpers for the distribution tests (test builds only).

/// Failure probability of every distribution test.
pub(crate) const ALPHA: f64 = 1e-6;

/// Kolmogorov-Smirnov test with the Dvoretzky-Kiefer-Wolfowitz-Massart bound:
/// if `samples` are iid from the distribution with CDF `cdf`,
/// P[sup |F_n - F| > sqrt(ln(2/alpha) / 2n)] <= alpha, for any distribution
/// (discrete ones included). Returns the statistic, or why it rejects.
pub(crate) fn ks_dkw(samples: &[i64], cdf: impl Fn(i64) -> f64, alpha: f64) -> Result<f64, String> {
    let n = samples.len();
    assert!(n > 0);
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let (lo, hi) = (sorted[0], sorted[n - 1]);
    let mut d: f64 = cdf(lo - 1).abs();
    let mut idx = 0;
    for x in lo..=hi {
        while idx < n && sorted[idx] <= x {
            idx += 1;
        }
        d = d.max((idx as f64 / n as f64 - cdf(x)).abs());
    }
    let critical = ((2.0 / alpha).ln() / (2.0 * n as f64)).sqrt();
    if d > critical {
        Err(format!(
            "KS statistic {d:.5} > critical {critical:.5} (n = {n})"
        ))
    } else {
        Ok(d)
    }
}

/// CDF of the discrete Laplace distribution with scale b:
/// P[X = x] = (1 - a) / (1 + a) a^|x|, a = e^(-1/b).
pub(crate) fn discrete_laplace_cdf(b: f64) -> impl Fn(i64) -> f64 {
    let a = (-1.0 / b).exp();
    move |x| {
        if x >= 0 {
            1.0 - a.powf((x + 1) as f64) / (1.0 + a)
        } else {
            a.powf((-x) as f64) / (1.0 + a)
        }
    }
}

/// CDF of the discrete Gaussian with parameter sigma:
/// P[X = x] proportional to e^(-x^2 / 2 sigma^2), summed exactly over
/// |x| <= 40 sigma + 10 (the rest is below 1e-300).
pub(crate) fn discrete_gaussian_cdf(sigma: f64) -> impl Fn(i64) -> f64 {
    let m = (40.0 * sigma).ceil() as i64 + 10;
    let weights: Vec<f64> = (-m..=m)
        .map(|x| (-(x as f64).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let z: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let cum: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / z;
            acc
        })
        .collect();
    move |x| {
        if x < -m {
            0.0
        } else if x >= m {
            1.0
        } else {
            cum[(x + m) as usize]
        }
    }
}

/// Tests that `rows` (n draws of a k-vector, known mean 0) have identity
/// covariance, at overall failure probability `alpha` if the rows are iid
/// N(0, I). Union bound over k variances and k(k-1)/2 correlations, each
/// with the Laurent-Massart chi-square bounds (Ann. Stat. 2000, Lemma 1):
/// for Q ~ chi2(n), P[Q - n >= 2 sqrt(n x) + 2x] <= e^-x and
/// P[n - Q >= 2 sqrt(n x)] <= e^-x. A cross sum sum_r w_i w_j equals
/// (Q+ - Q-) / 2 with Q+- = sum ((w_i +- w_j) / sqrt 2)^2 independent
/// chi2(n), so |sum w_i w_j| <= 2 sqrt(n x) + 2x except with probability
/// 4 e^-x. Total failure <= (2k + 2k(k-1)) e^-x = 2k^2 e^-x = alpha.
/// Returns the largest deviation relative to its bound, or the first entry
/// outside it.
pub(crate) fn identity_covariance(rows: &[Vec<f64>], alpha: f64) -> Result<f64, String> {
    let n = rows.len();
    assert!(n > 0);
    let k = rows[0].len();
    let nf = n as f64;
    let x = (2.0 * (k * k) as f64 / alpha).ln();
    let bound = 2.0 * (nf * x).sqrt() + 2.0 * x;
    let mut worst: f64 = 0.0;
    for i in 0..k {
        for j in i..k {
            let s: f64 = rows.iter().map(|r| r[i] * r[j]).sum();
            let dev = if i == j { s - nf } else { s };
            let ratio = dev.abs() / bound;
            if ratio > 1.0 {
                return Err(format!(
                    "entry ({i}, {j}): sum {s:.1} over {n} rows, deviation {dev:.1} outside +-{bound:.1}"
                ));
            }
            worst = worst.max(ratio);
        }
    }
    Ok(worst)
}

/// Whether n draws whose squares sum to `sum_sq`, each N(0, var), are
/// consistent with that variance (two-sided Laurent-Massart bound at
/// failure probability `alpha`).
pub(crate) fn variance_consistent(sum_sq: f64, n: usize, var: f64, alpha: f64) -> bool {
    let nf = n as f64;
    let x = (2.0 / alpha).ln();
    let q = sum_sq / var;
    q - nf < 2.0 * (nf * x).sqrt() + 2.0 * x && nf - q < 2.0 * (nf * x).sqrt()
}
