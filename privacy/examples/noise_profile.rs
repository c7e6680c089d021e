//! Where the time of OpenDP's noise goes: targeted micro-measurements of the
//! pieces `veil-node bench noise` strings together (RNG call, measurement
//! construction, per-value sampling through a measurement and through the
//! public CKS20 sampler functions, the float path at several grid
//! exponents `k`). Figures go to stdout as `name value unit` lines.
//!
//! `cargo run --release -p veil-privacy --example noise_profile [values]`
//!
//! Developer tool only: nothing here is a production path.

use std::time::Instant;

use opendp::{
    domains::{AtomDomain, VectorDomain},
    measurements::{make_gaussian, make_laplace},
    metrics::{L1Distance, L2Distance},
    traits::samplers::{fill_bytes, sample_discrete_gaussian, sample_discrete_laplace},
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn time<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, f64)> {
    let t = Instant::now();
    let out = f()?;
    Ok((out, t.elapsed().as_secs_f64()))
}

fn line(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.1} {unit}");
}

fn main() -> Res<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50_000);

    // 1. RNG: one RAND_priv_bytes call per fill_bytes, whatever its length.
    let calls = 200_000;
    let mut one = [0u8; 1];
    let ((), s) = time(|| {
        for _ in 0..calls {
            fill_bytes(&mut one)?;
        }
        Ok(())
    })?;
    line("fill_bytes_1B_ns_per_call", s * 1e9 / calls as f64, "ns");
    let mut big = vec![0u8; 1 << 16];
    let reps = 64;
    let ((), s) = time(|| {
        for _ in 0..reps {
            fill_bytes(&mut big)?;
        }
        Ok(())
    })?;
    line(
        "fill_bytes_64KiB_ns_per_byte",
        s * 1e9 / (reps * big.len()) as f64,
        "ns",
    );

    // 2. Building a measurement.
    let builds = 2_000;
    let ((), s) = time(|| {
        for _ in 0..builds {
            std::hint::black_box(make_gaussian(
                VectorDomain::new(AtomDomain::<i64>::default()),
                L2Distance::<i64>::default(),
                1.0,
                None,
            )?);
        }
        Ok(())
    })?;
    line("build_gaussian_vector_us", s * 1e6 / builds as f64, "us");

    // 3. Per value: through the vector measurement vs the public samplers.
    let zeros = vec![0i64; n];
    let m = make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<i64>::default(),
        1.0,
        None,
    )?;
    let (_, s) = time(|| Ok(m.invoke(&zeros)?))?;
    line(
        "gaussian_i64_measurement_values_per_s",
        n as f64 / s,
        "values/s",
    );
    let (_, s) = time(|| {
        (0..n)
            .map(|_| {
                Ok(i64::try_from(sample_discrete_gaussian(
                    1.0f64.try_into()?,
                )?)?)
            })
            .collect::<Res<Vec<i64>>>()
    })?;
    line(
        "gaussian_sampler_direct_values_per_s",
        n as f64 / s,
        "values/s",
    );
    let m = make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        1.0,
        None,
    )?;
    let (_, s) = time(|| Ok(m.invoke(&zeros)?))?;
    line(
        "laplace_i64_measurement_values_per_s",
        n as f64 / s,
        "values/s",
    );
    let (_, s) = time(|| {
        (0..n)
            .map(|_| Ok(i64::try_from(sample_discrete_laplace(1.0f64.try_into()?)?)?))
            .collect::<Res<Vec<i64>>>()
    })?;
    line(
        "laplace_sampler_direct_values_per_s",
        n as f64 / s,
        "values/s",
    );

    // 4. Two threads, each with its own measurement.
    let half = n / 2;
    let (_, s) = time(|| {
        std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| -> Result<Vec<i64>, String> {
                        let m = make_gaussian(
                            VectorDomain::new(AtomDomain::<i64>::default()),
                            L2Distance::<i64>::default(),
                            1.0,
                            None,
                        )
                        .map_err(|e| e.to_string())?;
                        m.invoke(&vec![0i64; half]).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for h in hs {
                h.join().map_err(|_| "thread panicked")??;
            }
            Ok(())
        })
    })?;
    line(
        "gaussian_i64_2threads_values_per_s",
        (2 * half) as f64 / s,
        "values/s",
    );

    // 5. Float Gaussian (the model-update path) at sigma 0.3: OpenDP's default
    // grid 2^-149 (exact for every f32) vs coarser grids over a sized domain.
    let floats = vec![0.01f32; n / 5];
    for k in [None, Some(-100), Some(-70), Some(-50), Some(-30)] {
        let domain = match k {
            None => VectorDomain::new(AtomDomain::<f32>::new_non_nan()),
            Some(_) => VectorDomain::new(AtomDomain::<f32>::new_non_nan()).with_size(floats.len()),
        };
        let m = make_gaussian(domain, L2Distance::<f64>::default(), 0.3, k)?;
        let (_, s) = time(|| Ok(m.invoke(&floats)?))?;
        let label = k.map_or("default".to_string(), |k| format!("k{k}"));
        line(
            &format!("gaussian_f32_sigma0.3_{label}_values_per_s"),
            floats.len() as f64 / s,
            "values/s",
        );
        println!("  rho at sensitivity 1: {:e}", m.map(&1.0)?);
    }
    Ok(())
}
