use veil_privacy::policy::{LoadedPolicy, Reader};

use super::noise::{Noise, discrete_laplace_half_width, error95, variance};
use super::*;
use crate::storage::{Storage, StoredRelease};

/// Independent check: the discrete Laplace PMF summed term by term.
fn dl_half_width_by_enumeration(b: f64) -> f64 {
    let a = (-1.0 / b).exp();
    let c = (1.0 - a) / (1.0 + a);
    let mut mass = c;
    let mut h = 0;
    while mass < 0.95 {
        h += 1;
        mass += 2.0 * c * a.powi(h);
    }
    f64::from(h)
}

#[test]
fn discrete_laplace_bound_matches_enumeration() {
    for b in [0.3, 0.5, 1.0, 2.0, 2.5, 3.7, 10.0, 100.0, 1000.0] {
        assert_eq!(
            discrete_laplace_half_width(b),
            dl_half_width_by_enumeration(b),
            "b = {b}"
        );
        assert_eq!(
            Noise::DiscreteLaplace(b).error95(),
            dl_half_width_by_enumeration(b)
        );
    }
    // Large b approaches the continuous b ln 20.
    let b = 1000.0;
    assert!((discrete_laplace_half_width(b) - b * 20f64.ln()).abs() < 2.0);
}

#[test]
fn sum_bound_covers_95_percent_of_real_noise() {
    // Independent computation: draw the real mechanisms' noise (OpenDP via
    // the privacy crate) and count how often the sum falls inside the bound.
    let eps = veil_privacy::Epsilon::new(1.0).expect("epsilon");
    let rho = veil_privacy::Rho::new(0.5).expect("rho");
    let one_l = veil_privacy::mechanisms::count_laplace(0, 2, eps).expect("laplace");
    let one_g = veil_privacy::mechanisms::count_gaussian(0, 1, rho).expect("gaussian");
    let comps = [
        Noise::from_release("MECHANISM_DISCRETE_LAPLACE", one_l.scale()),
        Noise::from_release("MECHANISM_DISCRETE_LAPLACE", one_l.scale()),
        Noise::from_release("MECHANISM_DISCRETE_GAUSSIAN", one_g.scale()),
    ];
    let h = error95(&comps);
    let n = 20_000;
    let mut inside = 0;
    let mut strictly_inside = 0;
    for _ in 0..n {
        let x = veil_privacy::mechanisms::count_laplace(0, 2, eps)
            .expect("l")
            .value()
            + veil_privacy::mechanisms::count_laplace(0, 2, eps)
                .expect("l")
                .value()
            + veil_privacy::mechanisms::count_gaussian(0, 1, rho)
                .expect("g")
                .value();
        if x.abs() <= h {
            inside += 1;
        }
        if x.abs() <= h - 1.0 {
            strictly_inside += 1;
        }
    }
    let cover = f64::from(inside) / f64::from(n);
    let below = f64::from(strictly_inside) / f64::from(n);
    // h is the smallest integer with coverage >= 0.95: h covers at least
    // 95% and h - 1 less (binomial sd at n = 20000 is 0.0015; 5 sd slack).
    assert!(cover > 0.95 - 0.008, "coverage {cover} at h = {h}");
    assert!(
        below < 0.95 + 0.008,
        "coverage {below} at h - 1 = {}",
        h - 1.0
    );
    // Variances add.
    let v = variance(&comps);
    let expect =
        2.0 * Noise::DiscreteLaplace(one_l.scale()).variance() + one_g.scale() * one_g.scale();
    assert!((v - expect).abs() < 1e-9);
}

#[test]
fn bound_of_non_personal_is_zero_and_large_sums_fall_back_to_normal() {
    assert_eq!(error95(&[Noise::None, Noise::None]), 0.0);
    let big = [
        Noise::DiscreteLaplace(5000.0),
        Noise::DiscreteLaplace(5000.0),
    ];
    let e = error95(&big);
    let normal = 1.959_963_984_540_054 * variance(&big).sqrt();
    assert!(e >= normal - 1e-6 && e >= Noise::DiscreteLaplace(5000.0).error95());
}

const POLICY: &str = include_str!("../../../tests/policies/per_window.toml");

fn release(node: &str, metric: &str, zone: &str, w: i64, value: f64, scale: f64) -> StoredRelease {
    StoredRelease {
        idempotency_key: format!("arena/{node}/{metric}/{zone}/{w}/0"),
        content_sha256: String::new(),
        venue: "arena".into(),
        node: node.into(),
        metric: metric.into(),
        zone: zone.into(),
        window_start_ms: w,
        window_len_s: 60,
        mechanism: if scale > 0.0 {
            "MECHANISM_DISCRETE_LAPLACE"
        } else {
            "MECHANISM_NON_PERSONAL"
        }
        .into(),
        value,
        scale,
        epsilon: if scale > 0.0 { 1.0 } else { 0.0 },
        rho: 0.0,
        purpose: "crowd_safety".into(),
        policy_hash: String::new(),
        lease_id: String::new(),
        sequence: 1,
        stream_step: None,
    }
}

async fn storage_with(rows: &[StoredRelease]) -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let storage = Storage::open(&url).await.expect("open");
    let mut tx = storage.dangerous_raw_pool().begin().await.expect("tx");
    for r in rows {
        crate::storage::insert(&mut tx, r, 0).await.expect("insert");
    }
    tx.commit().await.expect("commit");
    (dir, storage)
}

#[tokio::test]
async fn pages_round_trip_and_combine_nodes() {
    let policy = LoadedPolicy::parse(POLICY).expect("policy");
    let mut rows = Vec::new();
    for zone in ["floor", "gate-a"] {
        for i in 0..7 {
            rows.push(release("n1", "occupancy", zone, i * 60_000, 10.0, 1.0));
            rows.push(release("n2", "occupancy", zone, i * 60_000, 5.0, 1.0));
        }
    }
    let (_dir, storage) = storage_with(&rows).await;
    let mut q = SeriesQuery {
        venue: "arena".into(),
        metric: "occupancy".into(),
        page_size: 3,
        ..SeriesQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = series(&storage, &policy, Reader::Organizer, &q)
            .await
            .expect("page");
        assert!(page.points.len() <= 3);
        all.extend(page.points);
        if page.next_page_token.is_empty() {
            break;
        }
        q.page_token = page.next_page_token;
    }
    assert_eq!(all.len(), 14);
    let two = error95(&[Noise::DiscreteLaplace(1.0), Noise::DiscreteLaplace(1.0)]);
    for p in &all {
        assert_eq!(p.value, 15.0);
        assert_eq!(p.releases, 2);
        assert_eq!(p.error95, two);
        assert_eq!(p.mechanism, "MECHANISM_DISCRETE_LAPLACE");
    }
    assert_eq!(all[0].zone, "floor");
    assert_eq!(all[13].zone, "gate-a");
    // One zone and a time range.
    let page = series(
        &storage,
        &policy,
        Reader::Organizer,
        &SeriesQuery {
            zone: Some("gate-a".into()),
            from_ms: 60_000,
            to_ms: 180_000,
            page_token: String::new(),
            page_size: 0,
            ..q.clone()
        },
    )
    .await
    .expect("range");
    assert_eq!(page.points.len(), 2);
    assert!(page.next_page_token.is_empty());
    // Zones and latest.
    assert_eq!(
        zones(&storage, &policy, Reader::Organizer, "arena")
            .await
            .expect("zones"),
        vec!["floor".to_owned(), "gate-a".to_owned()]
    );
    let latest = latest(&storage, &policy, Reader::Organizer, "arena", "occupancy")
        .await
        .expect("latest");
    assert_eq!(latest.len(), 2);
    assert!(latest.iter().all(|p| p.window_start_ms == 6 * 60_000));
}

#[tokio::test]
async fn bad_tokens_sizes_and_unreadable_metrics_are_refused() {
    let policy = LoadedPolicy::parse(POLICY).expect("policy");
    let rows: Vec<_> = (0..5)
        .map(|i| release("n1", "occupancy", "floor", i * 60_000, 1.0, 1.0))
        .collect();
    let (_dir, storage) = storage_with(&rows).await;
    let q = SeriesQuery {
        venue: "arena".into(),
        metric: "occupancy".into(),
        page_size: 2,
        ..SeriesQuery::default()
    };
    let first = series(&storage, &policy, Reader::Organizer, &q)
        .await
        .expect("first");
    for (token, why) in [
        ("zz".to_owned(), "not a token"),
        (
            hex::encode("v1|floor|0|60|0000000000000000"),
            "different query",
        ),
        (hex::encode("garbage"), "not a token"),
    ] {
        let err = series(
            &storage,
            &policy,
            Reader::Organizer,
            &SeriesQuery {
                page_token: token,
                ..q.clone()
            },
        )
        .await
        .expect_err("bad token");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("page_token") && m.contains(why)),
            "{err}"
        );
    }
    // A token of one query does not page another.
    let err = series(
        &storage,
        &policy,
        Reader::Organizer,
        &SeriesQuery {
            metric: "ingress".into(),
            page_token: first.next_page_token.clone(),
            ..q.clone()
        },
    )
    .await
    .expect_err("foreign token");
    assert!(matches!(err, Error::InvalidArgument(_)));
    let err = series(
        &storage,
        &policy,
        Reader::Organizer,
        &SeriesQuery {
            page_size: MAX_PAGE_SIZE + 1,
            ..q.clone()
        },
    )
    .await
    .expect_err("page size");
    assert!(matches!(err, Error::InvalidArgument(m) if m.contains("page_size")));
    // Not in the policy, or not for this reader.
    let err = series(
        &storage,
        &policy,
        Reader::Organizer,
        &SeriesQuery {
            metric: "heart_rate".into(),
            ..q.clone()
        },
    )
    .await
    .expect_err("not in policy");
    assert!(matches!(err, Error::NotReadable(_)));
    let err = series(
        &storage,
        &policy,
        Reader::Compliance,
        &SeriesQuery {
            metric: "app_users".into(),
            ..q.clone()
        },
    )
    .await
    .expect_err("not a reader");
    assert!(matches!(err, Error::NotReadable(_)));
}

#[tokio::test]
async fn small_values_are_suppressed_per_policy() {
    let policy = LoadedPolicy::parse(POLICY).expect("policy");
    let rows = vec![
        release("n1", "unique_devices", "floor", 0, 3.0, 2.0),
        release("n1", "unique_devices", "floor", 60_000, 30.0, 2.0),
    ];
    let (_dir, storage) = storage_with(&rows).await;
    let page = series(
        &storage,
        &policy,
        Reader::Organizer,
        &SeriesQuery {
            venue: "arena".into(),
            metric: "unique_devices".into(),
            ..SeriesQuery::default()
        },
    )
    .await
    .expect("page");
    assert!(
        page.points[0].suppressed && page.points[0].value == 0.0 && page.points[0].error95 == 0.0
    );
    assert!(!page.points[1].suppressed && page.points[1].value == 30.0);
}

#[test]
fn continual_running_totals_get_normal_bounds_from_their_std() {
    // The scale of a stream release is the std of its running total's noise.
    for m in ["MECHANISM_CONTINUAL_SQRT", "MECHANISM_CONTINUAL_TREE"] {
        let n = Noise::from_release(m, 46.0);
        assert_eq!(n, Noise::GaussianSum(46.0), "{m}");
        assert!((n.error95() - 1.959_963_984_540_054 * 46.0).abs() < 1e-9);
        assert!((n.variance() - 46.0 * 46.0).abs() < 1e-9);
    }
}
