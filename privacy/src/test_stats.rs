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
