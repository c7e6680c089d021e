use super::*;
use crate::test_stats::{ALPHA, identity_covariance, variance_consistent};

const MECHS: [StreamMechanism; 2] = [StreamMechanism::Tree, StreamMechanism::SqrtFactorization];

fn rho(v: f64) -> Rho {
    Rho::new(v).unwrap()
}

fn params(mechanism: StreamMechanism, horizon: u32, contribution: Contribution) -> StreamParams {
    StreamParams::new(mechanism, horizon, contribution, rho(0.05)).unwrap()
}

fn alternating(events: u32) -> Contribution {
    Contribution::Alternating { events }
}

/// Deterministic test inputs (not noise): a 64-bit LCG.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn increment(&mut self, max: i64) -> i64 {
        (self.next() % (2 * max as u64 + 1)) as i64 - max
    }
}

fn prefix(d: &[i64]) -> Vec<i64> {
    d.iter()
        .scan(0i64, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect()
}

/// ||C' Delta||^2, exact, from the public description of C' (independent of
/// the stream's code path): Toeplitz c' for the square root, every dyadic
/// node (i - 2^l, i], 2^l | i <= T, times gamma for the tree.
fn encoded_norm2(cal: &Calibration, delta: &[i64]) -> i128 {
    let t_len = delta.len();
    match cal.mechanism() {
        StreamMechanism::SqrtFactorization => {
            let c = cal.encoded_coefficients();
            (0..t_len)
                .map(|t| {
                    let v: i128 = (0..=t)
                        .map(|s| i128::from(c[t - s]) * i128::from(delta[s]))
                        .sum();
                    v * v
                })
                .sum()
        }
        StreamMechanism::Tree => {
            let g = i128::from(GAMMA);
            let mut total = 0;
            let mut width = 1;
            while width <= t_len {
                for end in (width..=t_len).step_by(width) {
                    let node: i128 = delta[end - width..end].iter().map(|&x| i128::from(x)).sum();
                    total += g * g * node * node;
                }
                width *= 2;
            }
            total
        }
    }
}

/// Every alternating +-1 vector of length t_len with at most `max_events`
/// nonzero entries, starting with `first`.
fn alternating_vectors(t_len: usize, max_events: usize, first: i64) -> Vec<Vec<i64>> {
    fn rec(v: &mut Vec<i64>, t_len: usize, left: usize, sign: i64, out: &mut Vec<Vec<i64>>) {
        if v.len() == t_len {
            out.push(v.clone());
            return;
        }
        v.push(0);
        rec(v, t_len, left, sign, out);
        v.pop();
        if left > 0 {
            v.push(sign);
            rec(v, t_len, left - 1, -sign, out);
            v.pop();
        }
    }
    let mut out = Vec::new();
    rec(&mut Vec::new(), t_len, max_events, first, &mut out);
    out
}

/// Every non-negative integer vector of length t_len summing to at most
/// `max_events`.
fn monotone_vectors(t_len: usize, max_events: i64) -> Vec<Vec<i64>> {
    fn rec(v: &mut Vec<i64>, t_len: usize, left: i64, out: &mut Vec<Vec<i64>>) {
        if v.len() == t_len {
            out.push(v.clone());
            return;
        }
        for x in 0..=left {
            v.push(x);
            rec(v, t_len, left - x, out);
            v.pop();
        }
    }
    let mut out = Vec::new();
    rec(&mut Vec::new(), t_len, max_events, &mut out);
    out
}

fn events(v: &[i64]) -> usize {
    v.iter().filter(|&&x| x != 0).count()
}

#[test]
fn names_round_trip() {
    for m in MECHS {
        assert_eq!(m.as_str().parse::<StreamMechanism>().unwrap(), m);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            format!("\"{}\"", m.as_str())
        );
    }
    assert!("tree".parse::<StreamMechanism>().is_err());
    assert_eq!(
        StreamMechanism::SqrtFactorization.kind(),
        MechanismKind::ContinualSqrt
    );
}

#[test]
fn sqrt_coefficients_are_rounded_central_binomials() {
    let cal = params(StreamMechanism::SqrtFactorization, 1440, alternating(1))
        .calibrate()
        .unwrap();
    let c = cal.encoded_coefficients();
    // gamma x (1, 1/2, 3/8, 5/16, 35/128).
    assert_eq!(&c[..5], &[65536, 32768, 24576, 20480, 17920]);
    assert!(c.windows(2).all(|w| w[1] <= w[0]) && c[1439] > 0);
    // c_k ~ 1 / sqrt(pi k).
    let asym = GAMMA as f64 / (std::f64::consts::PI * 1439.0).sqrt();
    assert!((c[1439] as f64 / asym - 1.0).abs() < 1e-3);
}

#[test]
fn release_factor_times_encoder_is_the_prefix_sum() {
    let mut rng = Lcg(7);
    for t_len in [1u32, 2, 7, 240, 1440] {
        let cal = params(StreamMechanism::SqrtFactorization, t_len, alternating(1))
            .calibrate()
            .unwrap();
        let (c, b) = (cal.encoded_coefficients(), cal.release_coefficients());
        let n = t_len as usize;
        let d: Vec<i64> = (0..n).map(|_| rng.increment(1000)).collect();
        // y = C' d exactly, then B' y in f64.
        let y: Vec<f64> = (0..n)
            .map(|t| {
                (0..=t)
                    .map(|s| i128::from(c[t - s]) * i128::from(d[s]))
                    .sum::<i128>() as f64
            })
            .collect();
        let scale = d.iter().map(|x| x.abs()).sum::<i64>().max(1) as f64;
        for (t, want) in prefix(&d).into_iter().enumerate() {
            let got: f64 = (0..=t).map(|s| b[t - s] * y[s]).sum();
            let err = (got - want as f64).abs();
            assert!(
                err <= 1e-6 * scale.max((want as f64).abs()),
                "T = {t_len}, t = {t}: B'C'd = {got}, prefix sum {want}"
            );
        }
    }
}

#[test]
fn negligible_noise_releases_the_exact_running_totals() {
    // rho = 1e12: sigma' ~ a few units on the 2^16 grid, i.e. ~1e-4 people.
    let mut rng = Lcg(3);
    for m in MECHS {
        let p = StreamParams::new(m, 300, alternating(4), rho(1e12)).unwrap();
        let mut s = ContinualStream::new(p).unwrap();
        let d: Vec<i64> = (0..300).map(|_| rng.increment(50)).collect();
        for (t, (x, want)) in d.iter().zip(prefix(&d)).enumerate() {
            let r = s.release(t as u32, *x).unwrap();
            assert!((r.value() - want as f64).abs() < 0.01, "{m}: t = {t}");
        }
    }
}

/// Exhaustive check of the sensitivity bounds for every allowed Delta,
/// T <= 10, E <= 4, both mechanisms and both shapes.
#[test]
fn sensitivity_bounds_hold_exhaustively() {
    for m in MECHS {
        for t_len in 1..=10usize {
            let alt: Vec<Vec<i64>> = [1, -1]
                .into_iter()
                .flat_map(|first| alternating_vectors(t_len, 4, first))
                .collect();
            let mono = monotone_vectors(t_len, 4);
            for e in 1..=4u32 {
                // Alternating: the bound is linear in E (so it adds over
                // streams); check it for each number of events m <= E in one
                // stream, and that E single entries at step 0 reach it.
                let cal = params(m, t_len as u32, alternating(e)).calibrate().unwrap();
                let per_event = cal.sensitivity_squared_bound() / u128::from(e);
                let mut max = 0i128;
                for v in alt.iter().filter(|v| events(v) <= e as usize) {
                    let n2 = encoded_norm2(&cal, v);
                    assert!(
                        n2 as u128 <= per_event * events(v) as u128,
                        "{m} T = {t_len}: {v:?} has ||C'D||^2 = {n2} > {} events x {per_event}",
                        events(v)
                    );
                    max = max.max(n2);
                }
                let mut entry = vec![0; t_len];
                entry[0] = 1;
                assert_eq!(encoded_norm2(&cal, &entry) as u128, per_event);
                let ratio = cal.sensitivity_squared_bound() as f64 / max as f64;
                assert!((1.0..=f64::from(e)).contains(&ratio));
                if t_len == 10 {
                    println!(
                        "{m} alternating T = 10, E = {e}: bound / one-stream max = {ratio:.3} \
                         (joint bound reached by {e} streams of one entry)"
                    );
                }
                // Monotone: tight in one stream.
                let cal = params(m, t_len as u32, Contribution::Monotone { events: e })
                    .calibrate()
                    .unwrap();
                let max = mono
                    .iter()
                    .filter(|v| v.iter().sum::<i64>() <= i64::from(e))
                    .map(|v| encoded_norm2(&cal, v))
                    .max()
                    .unwrap();
                assert_eq!(
                    max as u128,
                    cal.sensitivity_squared_bound(),
                    "{m} T = {t_len}"
                );
            }
        }
    }
}

#[test]
fn calibration_matches_opendp_map() {
    for m in MECHS {
        for c in [alternating(16), Contribution::Monotone { events: 3 }] {
            let p = params(m, 1440, c);
            let cal = p.calibrate().unwrap();
            let d = cal.sensitivity() as i64;
            assert_eq!(d as u128, ceil_sqrt(cal.sensitivity_squared_bound()));
            assert!((d as u128).pow(2) >= cal.sensitivity_squared_bound());
            let map = noise::gaussian_scalar(cal.sigma())
                .unwrap()
                .map(&d)
                .unwrap();
            assert_eq!(map, cal.rho().get());
            assert!(map <= 0.05 && map > 0.05 * (1.0 - 1e-9), "{m}: {map}");
        }
    }
}

/// The public release matrix M (x_hat = x + M z), from the mechanisms'
/// description: Toeplitz b' for the square root; for the tree, 1/gamma on
/// the nodes of (t+1)'s dyadic decomposition (the node closing at step s).
fn release_matrix(cal: &Calibration) -> Vec<Vec<f64>> {
    let n = cal.horizon() as usize;
    let mut m = vec![vec![0.0; n]; n];
    for (t, row) in m.iter_mut().enumerate() {
        match cal.mechanism() {
            StreamMechanism::SqrtFactorization => {
                for (s, v) in row.iter_mut().enumerate().take(t + 1) {
                    *v = cal.release_coefficients()[t - s];
                }
            }
            StreamMechanism::Tree => {
                // [1, t+1] = (0, a_1] + (a_1, a_2] + ... with a_j adding the
                // bits of t+1 from the highest down.
                let i = t + 1;
                let mut end = 0;
                for bit in (0..usize::BITS).rev() {
                    if i >> bit & 1 == 1 {
                        end += 1 << bit;
                        row[end - 1] = 1.0 / GAMMA as f64;
                    }
                }
            }
        }
    }
    m
}

fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                assert!(a[i][i] - s > 0.0, "not positive definite");
                l[i][j] = (a[i][i] - s).sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    l
}

/// Solves L w = r (forward substitution).
fn whiten(l: &[Vec<f64>], r: &[f64]) -> Vec<f64> {
    let mut w = vec![0.0; r.len()];
    for i in 0..r.len() {
        let s: f64 = (0..i).map(|k| l[i][k] * w[k]).sum();
        w[i] = (r[i] - s) / l[i][i];
    }
    w
}

const COV_T: u32 = 12;
const COV_RUNS: usize = 1500;

/// `COV_RUNS` whole streams of `COV_T` releases through the production path
/// (noise scaled by `noise_factor`), tested against the stated covariance
/// sigma'^2 M M^T of the *unscaled* calibration.
fn covariance_test(m: StreamMechanism, noise_factor: f64) -> Result<f64, String> {
    let p = params(m, COV_T, alternating(16));
    let cal = p.calibrate().unwrap();
    let rel = release_matrix(&cal);
    let n = COV_T as usize;
    let s2 = cal.sigma().powi(2);
    let cov: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| s2 * (0..n).map(|k| rel[i][k] * rel[j][k]).sum::<f64>())
                .collect()
        })
        .collect();
    for (t, row) in cov.iter().enumerate() {
        let stated = cal.std_at(t as u32).powi(2);
        assert!((row[t] / stated - 1.0).abs() < 1e-9, "{m}: std_at({t})");
    }
    let l = cholesky(&cov);
    let d: Vec<i64> = vec![3, -1, 0, 2, 5, -4, 0, 0, 1, -2, 7, 1];
    let truth = prefix(&d);
    let mut rows = Vec::with_capacity(COV_RUNS);
    let mut sum_sq = vec![0.0; n];
    for _ in 0..COV_RUNS {
        let mut s = ContinualStream::new(p).unwrap();
        s.dangerous_scale_noise(noise_factor);
        let err: Vec<f64> = (0..n)
            .map(|t| s.release(t as u32, d[t]).unwrap().value() - truth[t] as f64)
            .collect();
        for (acc, e) in sum_sq.iter_mut().zip(&err) {
            *acc += e * e;
        }
        rows.push(whiten(&l, &err));
    }
    // std_at against each step's empirical variance (one more union-bound
    // share of the failure probability per step).
    for (t, ss) in sum_sq.iter().enumerate() {
        let var = cal.std_at(t as u32).powi(2);
        if !variance_consistent(*ss, COV_RUNS, var, ALPHA / n as f64) {
            return Err(format!(
                "step {t}: empirical std {:.3} vs std_at {:.3}",
                (ss / COV_RUNS as f64).sqrt(),
                var.sqrt()
            ));
        }
    }
    identity_covariance(&rows, ALPHA)
}

#[test]
fn released_noise_has_the_stated_covariance() {
    for m in MECHS {
        let worst = covariance_test(m, 1.0).unwrap_or_else(|e| panic!("{m}: {e}"));
        println!("{m}: worst whitened covariance deviation {worst:.3} of its bound");
    }
}

#[test]
fn covariance_test_rejects_too_little_noise() {
    for m in MECHS {
        let r = covariance_test(m, 0.8);
        assert!(r.is_err(), "{m}: 0.8 x sigma' passed: {r:?}");
    }
}

#[test]
fn restore_continues_and_never_redraws() {
    for m in MECHS {
        let p = params(m, 60, alternating(16));
        let mut s = ContinualStream::new(p).unwrap();
        let mut sent = Vec::new();
        for t in 0..5 {
            sent.push(s.release(t, 2).unwrap());
        }
        let json = serde_json::to_string(s.state()).unwrap();
        let state: StreamState = serde_json::from_str(&json).unwrap();
        let mut r = ContinualStream::restore(p, state).unwrap();
        assert_eq!(r.next_step(), 5);
        assert_eq!(r.run(), s.run());
        for t in 0..5u32 {
            assert!(r.release(t, 2).is_err(), "{m}: step {t} released twice");
            let v = r.released(t).unwrap();
            assert!((v - sent[t as usize].value()).abs() <= 1e-9 * (1.0 + v.abs()));
        }
        let next = r.release(5, 1).unwrap();
        assert_eq!(next.run(), sent[0].run());
        assert_eq!(r.next_step(), 6);
        assert_eq!(r.state().increments, vec![2, 2, 2, 2, 2, 1]);

        // Other parameters, or a tampered state, are refused.
        let other = StreamParams::new(m, 60, alternating(16), rho(0.1)).unwrap();
        let state: StreamState = serde_json::from_str(&json).unwrap();
        assert!(ContinualStream::restore(other, state).is_err());
        let other = params(m, 61, alternating(16));
        let state: StreamState = serde_json::from_str(&json).unwrap();
        assert!(ContinualStream::restore(other, state).is_err());
        let mut bad: StreamState = serde_json::from_str(&json).unwrap();
        bad.noisy[2] += 1_000_000_000;
        assert!(ContinualStream::restore(p, bad).is_err());
        let mut bad: StreamState = serde_json::from_str(&json).unwrap();
        bad.released.pop();
        assert!(ContinualStream::restore(p, bad).is_err());
        let mut bad: StreamState = serde_json::from_str(&json).unwrap();
        bad.sigma *= 0.5;
        assert!(ContinualStream::restore(p, bad).is_err());
        let mut bad: StreamState = serde_json::from_str(&json).unwrap();
        bad.run = "00".into();
        assert!(ContinualStream::restore(p, bad).is_err());
        assert!(serde_json::from_str::<StreamState>(&json.replace("\"gamma\"", "\"x\"")).is_err());
    }
}

#[test]
fn a_header_and_its_steps_rebuild_the_state() {
    for m in MECHS {
        let p = params(m, 60, alternating(16));
        let mut s = ContinualStream::new(p).unwrap();
        s.release(0, 2).unwrap();
        s.release(3, 1).unwrap();
        let header = s.state().header();
        assert_eq!(header.next_step(), 0);
        assert_eq!(header.step(0), None);
        let mut rebuilt = header.clone();
        for t in 0..s.next_step() {
            rebuilt.push_step(s.state().step(t).unwrap());
        }
        assert_eq!(&rebuilt, s.state());
        let r = ContinualStream::restore(p, rebuilt).unwrap();
        assert_eq!(r.next_step(), 4);
        // A step that is not the post-processing of its noise is refused.
        let mut bad = header.clone();
        for t in 0..s.next_step() {
            let mut step = s.state().step(t).unwrap();
            if t == 2 {
                step.released += 1.0;
            }
            bad.push_step(step);
        }
        assert!(ContinualStream::restore(p, bad).is_err());
    }
}

#[test]
fn skipped_steps_are_released_with_zero_increments() {
    for m in MECHS {
        let mut s = ContinualStream::new(params(m, 30, alternating(2))).unwrap();
        let r = s.release(4, 3).unwrap();
        assert_eq!(s.next_step(), 5);
        assert_eq!(s.state().increments, vec![0, 0, 0, 0, 3]);
        assert!((0..5).all(|t| s.released(t).is_some()));
        assert_eq!(s.released(5), None);
        assert_eq!(r.value(), s.released(4).unwrap());
        assert_eq!(r.mechanism(), m.kind());
        assert_eq!(r.scale(), s.calibration().std_at(4));
        assert_eq!(r.cost(), Cost::Zcdp(rho(0.05)));
        assert!(r.run().is_some());
    }
}

#[test]
fn refusals() {
    for m in MECHS {
        for h in [0, MAX_HORIZON + 1] {
            assert!(StreamParams::new(m, h, alternating(1), rho(0.1)).is_err());
        }
        assert!(StreamParams::new(m, 10, alternating(0), rho(0.1)).is_err());
        assert!(StreamParams::new(m, 10, alternating(MAX_EVENTS + 1), rho(0.1)).is_err());
        assert!(Rho::new(0.0).is_err() && Rho::new(-1.0).is_err() && Rho::new(f64::NAN).is_err());
        // A rho so small the noise would not fit the encoding.
        assert!(
            StreamParams::new(m, 10, alternating(4), rho(1e-30))
                .unwrap()
                .calibrate()
                .is_err()
        );
        let mut s = ContinualStream::new(params(m, 10, alternating(4))).unwrap();
        assert!(matches!(s.release(10, 1), Err(PrivacyError::Halted { .. })));
        for d in [
            MAX_ABS_INCREMENT + 1,
            -MAX_ABS_INCREMENT - 1,
            i64::MIN,
            i64::MAX,
        ] {
            assert!(matches!(
                s.release(0, d),
                Err(PrivacyError::Overflow { .. })
            ));
        }
        // Nothing was drawn by the refusals.
        assert_eq!(s.next_step(), 0);
        s.release(0, MAX_ABS_INCREMENT).unwrap();
        s.release(1, -MAX_ABS_INCREMENT).unwrap();
        assert!(s.release(1, 0).is_err());
        assert!(s.release(9, 0).is_ok());
        assert!(s.release(9, 0).is_err());
    }
}

/// The largest encoded value, every step at the largest increment over the
/// longest horizon, stays within 2^61 (the module docs' overflow argument).
#[test]
fn largest_encoded_values_fit() {
    let c = encoded_sqrt_coefficients(MAX_HORIZON).unwrap();
    let sum: i128 = c.iter().map(|&c| i128::from(c)).sum();
    assert!(sum * i128::from(MAX_ABS_INCREMENT) <= 1 << 61);
    let top_node = 1i128 << (levels_for(MAX_HORIZON) - 1);
    assert!(top_node * i128::from(GAMMA) * i128::from(MAX_ABS_INCREMENT) <= 1 << 61);
}

/// End to end at the largest increment on every step (the tree over the
/// longest horizon; the square root, O(T^2) in a debug build, over 2,000).
#[test]
fn largest_inputs_do_not_overflow() {
    for (m, horizon) in [
        (StreamMechanism::Tree, MAX_HORIZON),
        (StreamMechanism::SqrtFactorization, 2000),
    ] {
        let p = StreamParams::new(m, horizon, alternating(4), rho(1.0)).unwrap();
        let mut s = ContinualStream::new(p).unwrap();
        let mut last = 0.0;
        for t in 0..horizon {
            last = s.release(t, MAX_ABS_INCREMENT).unwrap().value();
        }
        let want = f64::from(horizon) * MAX_ABS_INCREMENT as f64;
        assert!((last - want).abs() < 1e-9 * want, "{m}: {last} vs {want}");
    }
}

fn figures(t_len: u32) -> (Calibration, Calibration) {
    let p = |m| params(m, t_len, alternating(16));
    (
        p(StreamMechanism::Tree).calibrate().unwrap(),
        p(StreamMechanism::SqrtFactorization).calibrate().unwrap(),
    )
}

#[test]
fn sqrt_beats_the_tree() {
    for t_len in [240, 1440] {
        let (tree, sqrt) = figures(t_len);
        let ratio = (tree.max_std() / sqrt.max_std()).powi(2);
        for (name, c) in [("tree", &tree), ("sqrt", &sqrt)] {
            println!(
                "T = {t_len}, E = 16 alternating, rho = 0.05, {name}: sigma' = {:.1} \
                 (sigma'/gamma = {:.3}), max std = {:.3}, std at last step = {:.3}",
                c.sigma(),
                c.sigma() / GAMMA as f64,
                c.max_std(),
                c.std_at(t_len - 1)
            );
        }
        println!("T = {t_len}: max variance ratio tree / sqrt = {ratio:.2}");
        assert!(ratio > 5.0, "T = {t_len}: ratio {ratio}");
    }
}
