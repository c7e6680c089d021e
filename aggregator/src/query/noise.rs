//! Noise of released values, from the public noise parameters each release
//! carries (mechanism + scale): variances and 95% error bounds of one
//! release and of sums of independent releases.
//!
//! # The 95% bound
//! `error95` is the half-width `h` of the smallest symmetric interval with
//! `P(|N| <= h) >= 0.95`, where `N` is the total noise of the combined value:
//! * one discrete Laplace release with scale `b` (`alpha = exp(-1/b)`,
//!   `P(N = k) = (1 - alpha) / (1 + alpha) * alpha^|k|`): the tail is
//!   `P(|N| > h) = 2 alpha^(h+1) / (1 + alpha)`, so
//!   `h = ceil(ln(0.025 (1 + alpha)) / ln(alpha) - 1)`;
//! * a sum of independent integer-valued noises (discrete Laplace and
//!   discrete Gaussian, what count releases carry): the exact distribution of
//!   the sum by convolving their probability mass functions (each truncated
//!   where its two tails hold less than 1e-12), then `h` from that;
//! * otherwise (real-valued sums, or a convolution too large to compute in a
//!   query): the normal approximation `1.96 * sqrt(sum of variances)`, never
//!   below the largest single component's own bound (the Laplace tail is
//!   heavier than the normal one, so the normal bound alone would be too
//!   narrow for one dominant Laplace term).
//!
//! Continual-release running totals (`MECHANISM_CONTINUAL_*`) carry as
//! `scale` the standard deviation of their noise at that step: a fixed linear
//! combination of many independent discrete Gaussians on a 2^-16 lattice with
//! large sigma, treated as normal (`GaussianSum`, `1.96 * scale`). Two
//! running totals of the same stream are correlated; sums across zones add
//! independent streams.
//!
//! Variances: discrete Laplace `2 alpha / (1 - alpha)^2`; discrete Gaussian
//! `sigma^2` (an upper bound: the discrete Gaussian's variance is slightly
//! below it); continuous Laplace `2 b^2`; Gaussian `sigma^2`. A sum adds the
//! variances (independent noise); a mean of `n` divides the sum's by `n^2`.

/// The noise one release carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise {
    /// Discrete Laplace with scale `b` (integer counts).
    DiscreteLaplace(f64),
    /// Discrete Gaussian with parameter `sigma` (integer counts).
    DiscreteGaussian(f64),
    /// Laplace on a fixed-point grid, scale in the value's unit.
    LaplaceSum(f64),
    /// Gaussian on a fixed-point grid, sigma in the value's unit.
    GaussianSum(f64),
    /// No noise (policy-declared non-personal values).
    None,
}

/// Tail mass dropped from each side of a truncated PMF.
const TAIL: f64 = 1e-12;
/// Largest `width_so_far * next_width` a convolution may cost.
const MAX_CONVOLUTION_WORK: f64 = 4e6;
/// Two-sided 95% normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

impl Noise {
    /// From a stored release's mechanism name (proto enum name) and scale.
    /// Unknown mechanisms are treated as Laplace of the given scale, the
    /// heavier-tailed choice.
    pub fn from_release(mechanism: &str, scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            0.0
        };
        match mechanism {
            _ if scale == 0.0 => Noise::None,
            "MECHANISM_DISCRETE_LAPLACE" => Noise::DiscreteLaplace(scale),
            "MECHANISM_DISCRETE_GAUSSIAN" => Noise::DiscreteGaussian(scale),
            "MECHANISM_GAUSSIAN_SUM" | "MECHANISM_CONTINUAL_SQRT" | "MECHANISM_CONTINUAL_TREE" => {
                Noise::GaussianSum(scale)
            }
            "MECHANISM_NON_PERSONAL" => Noise::None,
            _ => Noise::LaplaceSum(scale),
        }
    }

    /// Variance of the noise.
    pub fn variance(self) -> f64 {
        match self {
            Noise::DiscreteLaplace(b) => {
                let a = (-1.0 / b).exp();
                2.0 * a / ((1.0 - a) * (1.0 - a))
            }
            Noise::DiscreteGaussian(s) | Noise::GaussianSum(s) => s * s,
            Noise::LaplaceSum(b) => 2.0 * b * b,
            Noise::None => 0.0,
        }
    }

    /// 95% half-width of this noise alone.
    pub fn error95(self) -> f64 {
        match self {
            Noise::DiscreteLaplace(b) => discrete_laplace_half_width(b),
            Noise::DiscreteGaussian(_) => {
                pmf(self).map_or(Z95 * self.variance().sqrt(), |p| half_width(&p.1, p.0))
            }
            Noise::LaplaceSum(b) => b * 20f64.ln(),
            Noise::GaussianSum(s) => Z95 * s,
            Noise::None => 0.0,
        }
    }
}

/// `h = ceil(ln(0.025 (1 + alpha)) / ln(alpha) - 1)`, at least 0.
pub fn discrete_laplace_half_width(b: f64) -> f64 {
    let a = (-1.0 / b).exp();
    if a <= 0.0 {
        return 0.0;
    }
    let x = (0.025 * (1.0 + a)).ln() / a.ln() - 1.0;
    // Guard against x landing a hair above an integer by rounding error.
    let h = (x - 1e-9).ceil().max(0.0);
    // Make sure the tail condition really holds at h.
    if 2.0 * a.powf(h + 1.0) / (1.0 + a) > 0.05 {
        h + 1.0
    } else {
        h
    }
}

/// The truncated PMF of an integer-valued noise: (value of index 0, masses).
fn pmf(n: Noise) -> Option<(i64, Vec<f64>)> {
    let (l, mass): (i64, Box<dyn Fn(i64) -> f64>) = match n {
        Noise::DiscreteLaplace(b) => {
            let a = (-1.0 / b).exp();
            let l = (b * (2.0 / TAIL).ln()).ceil();
            let c = (1.0 - a) / (1.0 + a);
            (
                l as i64,
                Box::new(move |k: i64| c * a.powf(k.unsigned_abs() as f64)),
            )
        }
        Noise::DiscreteGaussian(s) => {
            let l = (s * (2.0 * (1.0 / TAIL).ln()).sqrt()).ceil() + 1.0;
            (
                l as i64,
                Box::new(move |k: i64| (-((k * k) as f64) / (2.0 * s * s)).exp()),
            )
        }
        _ => return None,
    };
    if !(0..=1_000_000).contains(&l) {
        return None;
    }
    let mut p: Vec<f64> = (-l..=l).map(&mass).collect();
    let total: f64 = p.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return None;
    }
    for x in &mut p {
        *x /= total;
    }
    Some((-l, p))
}

/// Smallest `h` with mass in `[-h, h]` at least 0.95.
fn half_width(p: &[f64], offset: i64) -> f64 {
    let at = |k: i64| -> f64 {
        let i = k - offset;
        if i < 0 || i as usize >= p.len() {
            0.0
        } else {
            p[i as usize]
        }
    };
    let max_h = (offset.unsigned_abs()).max((offset + p.len() as i64).unsigned_abs());
    let mut mass = at(0);
    let mut h = 0i64;
    while mass < 0.95 - 1e-12 && (h as u64) < max_h {
        h += 1;
        mass += at(h) + at(-h);
    }
    h as f64
}

/// Sum of the components' variances.
pub fn variance(components: &[Noise]) -> f64 {
    components.iter().map(|n| n.variance()).sum()
}

/// 95% half-width of the sum of independent `components` (see the module
/// docs for the method).
pub fn error95(components: &[Noise]) -> f64 {
    let noisy: Vec<Noise> = components
        .iter()
        .copied()
        .filter(|n| *n != Noise::None)
        .collect();
    match noisy.as_slice() {
        [] => 0.0,
        [one] => one.error95(),
        many => exact_sum_half_width(many).unwrap_or_else(|| {
            let largest = many.iter().map(|n| n.error95()).fold(0.0, f64::max);
            (Z95 * variance(many).sqrt()).max(largest)
        }),
    }
}

fn exact_sum_half_width(components: &[Noise]) -> Option<f64> {
    let mut acc: Option<(i64, Vec<f64>)> = None;
    for &c in components {
        let (off, p) = pmf(c)?;
        acc = Some(match acc {
            None => (off, p),
            Some((aoff, a)) => {
                if (a.len() as f64) * (p.len() as f64) > MAX_CONVOLUTION_WORK {
                    return None;
                }
                let mut out = vec![0.0; a.len() + p.len() - 1];
                for (i, x) in a.iter().enumerate() {
                    if *x == 0.0 {
                        continue;
                    }
                    for (j, y) in p.iter().enumerate() {
                        out[i + j] += x * y;
                    }
                }
                (aoff + off, out)
            }
        });
    }
    let (off, p) = acc?;
    Some(half_width(&p, off))
}
