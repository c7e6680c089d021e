use super::*;
use crate::mechanisms::{count_gaussian, count_laplace};

/// A 3-hour event of 1-minute windows.
const T: u64 = 180;

fn counts() -> Vec<i64> {
    (0..T as i64).map(|t| (t * 37 + 11) % 50).collect()
}

fn prefix(xs: &[i64]) -> Vec<i64> {
    xs.iter()
        .scan(0, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect()
}

fn rmse(errors: &[f64]) -> f64 {
    (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt()
}

#[test]
fn levels_cover_the_horizon() {
    assert_eq!(TreeCounter::levels_for(1), 1);
    assert_eq!(TreeCounter::levels_for(180), 8);
    assert_eq!(TreeCounter::levels_for(255), 8);
    assert_eq!(TreeCounter::levels_for(256), 9);
}

#[test]
fn running_totals_are_exact_sums_of_dyadic_nodes() {
    // Negligible noise: the decomposition itself must give the prefix sums.
    let mut c = TreeCounter::new(T, 1, TreeNoise::Laplace(Epsilon::new(1e6).unwrap())).unwrap();
    let xs = counts();
    for (x, want) in xs.iter().zip(prefix(&xs)) {
        assert_eq!(c.push(*x).unwrap().value(), want as f64);
    }
    assert!(matches!(c.push(1), Err(PrivacyError::Halted { .. })));
}

#[test]
fn privacy_maps_equal_the_documented_cost() {
    let c = TreeCounter::new(T, 1, TreeNoise::Laplace(Epsilon::new(1.0).unwrap())).unwrap();
    assert_eq!(c.node_scale(), 8.0);
    assert_eq!(
        noise::laplace_scalar(c.node_scale())
            .unwrap()
            .map(&8)
            .unwrap(),
        1.0
    );
    // T = 3: L = 2, sigma = sqrt(2 / (2 x 0.25)) = 2, each level rho / 2.
    let c = TreeCounter::new(3, 1, TreeNoise::Gaussian(Rho::new(0.25).unwrap())).unwrap();
    assert_eq!(c.node_scale(), 2.0);
    assert_eq!(
        noise::gaussian_scalar(2.0).unwrap().map(&1).unwrap() * 2.0,
        0.25
    );
    // Any horizon: L x per-level rho never exceeds the budget.
    let c = TreeCounter::new(T, 3, TreeNoise::Gaussian(Rho::new(0.5).unwrap())).unwrap();
    let per_level = noise::gaussian_scalar(c.node_scale())
        .unwrap()
        .map(&3)
        .unwrap();
    assert!(per_level * 8.0 <= 0.5 && per_level * 8.0 > 0.5 * (1.0 - 1e-12));
}

fn fraction_within_bound(noise: TreeNoise, runs: usize) -> f64 {
    let xs = counts();
    let truth = prefix(&xs);
    let (mut inside, mut total) = (0, 0);
    for _ in 0..runs {
        let mut c = TreeCounter::new(T, 1, noise).unwrap();
        for (t, x) in xs.iter().enumerate() {
            let v = c.push(*x).unwrap().value();
            let bound = c.error_bound(t as u64 + 1, 0.01);
            inside += usize::from((v - truth[t] as f64).abs() <= bound);
            total += 1;
        }
    }
    inside as f64 / total as f64
}

#[test]
fn error_bound_holds_for_99_percent_of_running_totals() {
    let f = fraction_within_bound(TreeNoise::Laplace(Epsilon::new(1.0).unwrap()), 50);
    assert!(f >= 0.99, "Laplace: {f}");
    let f = fraction_within_bound(TreeNoise::Gaussian(Rho::new(0.5).unwrap()), 50);
    assert!(f >= 0.99, "Gaussian: {f}");
    // The bound is polylog: at T = 180 and epsilon = 1 it is far below the
    // naive running total's (Laplace scale 180: 180 ln(1/0.01) = 829).
    let c = TreeCounter::new(T, 1, TreeNoise::Laplace(Epsilon::new(1.0).unwrap())).unwrap();
    let worst = (1..=T).map(|t| c.error_bound(t, 0.01)).fold(0.0, f64::max);
    println!("worst 99% error bound over T=180 (Laplace, epsilon=1): {worst:.1}");
    assert!(worst < 180.0 * 100f64.ln() / 5.0, "{worst}");
}

/// Root-mean-square error over all running totals, over `runs` streams, of
/// (tree counter, naive: each window's running total released with
/// budget / T, naive per-window counts with the full budget each summed).
fn compare(laplace: bool, runs: usize) -> (f64, f64, f64) {
    let xs = counts();
    let truth = prefix(&xs);
    let (mut tree, mut naive, mut per_window) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let noise = if laplace {
            TreeNoise::Laplace(Epsilon::new(1.0).unwrap())
        } else {
            TreeNoise::Gaussian(Rho::new(0.5).unwrap())
        };
        let mut c = TreeCounter::new(T, 1, noise).unwrap();
        let mut running = 0.0;
        for (t, x) in xs.iter().enumerate() {
            let truth = truth[t] as f64;
            tree.push(c.push(*x).unwrap().value() - truth);
            let (n, w) = if laplace {
                let share = Epsilon::new(1.0 / T as f64).unwrap();
                let full = Epsilon::new(1.0).unwrap();
                (
                    count_laplace(truth as i64, 1, share).unwrap(),
                    count_laplace(*x, 1, full).unwrap(),
                )
            } else {
                let share = Rho::new(0.5 / T as f64).unwrap();
                let full = Rho::new(0.5).unwrap();
                (
                    count_gaussian(truth as i64, 1, share).unwrap(),
                    count_gaussian(*x, 1, full).unwrap(),
                )
            };
            naive.push(n.value() - truth);
            running += w.value();
            per_window.push(running - truth);
        }
    }
    (rmse(&tree), rmse(&naive), rmse(&per_window))
}

#[test]
fn tree_beats_naive_composition_at_equal_budget() {
    let (tree, naive, per_window) = compare(true, 40);
    println!(
        "T=180, Laplace epsilon=1: RMSE tree {tree:.1}, naive composition {naive:.1}, per-window sum {per_window:.1}"
    );
    assert!(tree < naive / 4.0, "tree {tree} vs naive {naive}");
    let (tree, naive, per_window) = compare(false, 40);
    println!(
        "T=180, Gaussian rho=0.5: RMSE tree {tree:.1}, naive composition {naive:.1}, per-window sum {per_window:.1}"
    );
    assert!(tree < naive, "tree {tree} vs naive {naive}");
    assert!(tree < per_window, "tree {tree} vs per-window {per_window}");
}
