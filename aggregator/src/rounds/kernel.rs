//! The numeric side of rounds: reading and validating safetensors model
//! files and updates, the FedAvg kernel (chunked, auto-vectorisable f32
//! loops), evaluating an MLP on a public evaluation set, and the
//! `bench fedavg` figures.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Elements per chunk: the accumulator chunk (16 KiB) stays in L1 while every
/// update streams through it.
const CHUNK: usize = 4096;
/// Lanes of the inner loop (a multiple of every SIMD width we target).
const LANES: usize = 16;

/// A model file's tensors flattened in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct Flat {
    /// (name, shape) in name order.
    pub layout: Vec<(String, Vec<usize>)>,
    /// All values, tensors concatenated in `layout` order.
    pub values: Vec<f32>,
    /// The file's `__metadata__`.
    pub metadata: HashMap<String, String>,
}

/// Parses a safetensors file whose tensors are all F32.
pub fn parse(bytes: &[u8]) -> Result<Flat, String> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let mut layout = Vec::with_capacity(names.len());
    let mut values = Vec::new();
    for name in names {
        let t = st
            .tensor(&name)
            .map_err(|e| format!("tensor {name}: {e}"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor {name} has dtype {:?}, expected F32",
                t.dtype()
            ));
        }
        values.extend(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        layout.push((name, t.shape().to_vec()));
    }
    Ok(Flat {
        layout,
        values,
        metadata,
    })
}

/// Encodes `values` laid out as `layout` as a safetensors file.
pub fn encode(
    layout: &[(String, Vec<usize>)],
    values: &[f32],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut bufs = Vec::with_capacity(layout.len());
    let mut at = 0;
    for (name, shape) in layout {
        let n: usize = shape.iter().product();
        let v = values
            .get(at..at + n)
            .ok_or_else(|| format!("values too short for tensor {name}"))?;
        bufs.push(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        at += n;
    }
    let views = layout
        .iter()
        .zip(&bufs)
        .map(|((name, shape), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// L2 norm, accumulated in f64 over f32 lanes.
pub fn l2_norm(v: &[f32]) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut total = 0.0f64;
    for chunk in v.chunks(CHUNK) {
        let mut it = chunk.chunks_exact(LANES);
        for lane in &mut it {
            for (a, x) in acc.iter_mut().zip(lane) {
                *a += x * x;
            }
        }
        total += it.remainder().iter().map(|x| f64::from(x * x)).sum::<f64>();
        total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
        acc = [0.0; LANES];
    }
    total.sqrt()
}

/// Checks an update against the global model's layout and the round's
/// bound; returns its values. The reason names the first problem.
pub fn validate_update(
    update: &[u8],
    layout: &[(String, Vec<usize>)],
    max_norm: f64,
) -> Result<Vec<f32>, String> {
    let u = parse(update)?;
    if u.layout != layout {
        let want: Vec<String> = layout.iter().map(|(n, s)| format!("{n}{s:?}")).collect();
        let got: Vec<String> = u.layout.iter().map(|(n, s)| format!("{n}{s:?}")).collect();
        return Err(format!(
            "wrong shape: tensors {} do not match the global model's {}",
            got.join(","),
            want.join(",")
        ));
    }
    if let Some(i) = u.values.iter().position(|x| !x.is_finite()) {
        return Err(format!("non-finite value (NaN or infinity) at index {i}"));
    }
    let norm = l2_norm(&u.values);
    if norm > max_norm {
        return Err(format!(
            "L2 norm {norm:.4} exceeds the bound {max_norm:.4} (clip norm plus noise allowance)"
        ));
    }
    Ok(u.values)
}

/// `acc += u`, element-wise (lengths must match; the shorter wins).
pub fn accumulate(acc: &mut [f32], u: &[f32]) {
    let mut a = acc.chunks_exact_mut(LANES);
    let mut b = u.chunks_exact(LANES);
    for (x, y) in (&mut a).zip(&mut b) {
        for (x, y) in x.iter_mut().zip(y) {
            *x += y;
        }
    }
    for (x, y) in a.into_remainder().iter_mut().zip(b.remainder()) {
        *x += y;
    }
}

/// FedAvg: `out = mean(updates)`, computed chunk by chunk so the output
/// chunk stays in cache while each update streams through it.
pub fn fedavg(updates: &[&[f32]], out: &mut [f32]) {
    out.fill(0.0);
    if updates.is_empty() {
        return;
    }
    let inv = 1.0 / updates.len() as f32;
    for (ci, o) in out.chunks_mut(CHUNK).enumerate() {
        let lo = ci * CHUNK;
        for u in updates {
            if let Some(src) = u.get(lo..lo + o.len()) {
                accumulate(o, src);
            }
        }
        for x in o.iter_mut() {
            *x *= inv;
        }
    }
}

/// `base + sum / n`, element-wise.
pub fn apply_mean(base: &[f32], sum: &[f32], n: u32) -> Vec<f32> {
    let inv = 1.0 / n.max(1) as f32;
    base.iter().zip(sum).map(|(b, s)| b + s * inv).collect()
}

/// Evaluates an `mlp-relu` model (metadata `dims`, `task`; tensors
/// `l{i}.weight`/`l{i}.bias`) on an evaluation set (tensors `x` [n, d] and
/// `y` [n]). Returns (metric name, value): `eval_mse` for regression,
/// `eval_accuracy` for classification.
pub fn evaluate(model: &Flat, eval: &Flat) -> Result<(String, f64), String> {
    let dims: Vec<usize> = model
        .metadata
        .get("dims")
        .ok_or("model has no dims metadata")?
        .split(',')
        .map(|d| d.trim().parse::<usize>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let task = model
        .metadata
        .get("task")
        .map_or("regression", String::as_str);
    let tensor = |f: &Flat, name: &str| -> Result<(Vec<usize>, Vec<f32>), String> {
        let mut at = 0;
        for (n, s) in &f.layout {
            let len: usize = s.iter().product();
            if n == name {
                return Ok((s.clone(), f.values[at..at + len].to_vec()));
            }
            at += len;
        }
        Err(format!("tensor {name} missing"))
    };
    let (xs, x) = tensor(eval, "x")?;
    let (_, y) = tensor(eval, "y")?;
    let d_in = *dims.first().ok_or("empty dims")?;
    if xs.len() != 2 || xs[1] != d_in || xs[0] != y.len() {
        return Err("evaluation set does not match the model's input".into());
    }
    let layers = dims.len().saturating_sub(1);
    let mut weights = Vec::with_capacity(layers);
    for i in 0..layers {
        let (ws, w) = tensor(model, &format!("l{i}.weight"))?;
        let (_, b) = tensor(model, &format!("l{i}.bias"))?;
        if ws != [dims[i + 1], dims[i]] {
            return Err(format!("l{i}.weight has shape {ws:?}"));
        }
        weights.push((w, b));
    }
    let mut total = 0.0f64;
    for (row, target) in x.chunks_exact(d_in).zip(&y) {
        let mut h: Vec<f32> = row.to_vec();
        for (i, (w, b)) in weights.iter().enumerate() {
            let (o, k) = (dims[i + 1], dims[i]);
            let mut next = b.clone();
            for (j, n) in next.iter_mut().enumerate() {
                *n += w[j * k..(j + 1) * k]
                    .iter()
                    .zip(&h)
                    .map(|(a, b)| a * b)
                    .sum::<f32>();
            }
            if i + 1 < layers {
                next.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            debug_assert_eq!(next.len(), o);
            h = next;
        }
        total += if task == "classification" {
            let best = h
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                    if v > b.1 { (i, v) } else { b }
                })
                .0;
            f64::from(u8::from(best as f32 == *target))
        } else {
            let e = f64::from(h.first().copied().unwrap_or(0.0) - target);
            e * e
        };
    }
    let n = y.len().max(1) as f64;
    let name = if task == "classification" {
        "eval_accuracy"
    } else {
        "eval_mse"
    };
    Ok((name.to_owned(), total / n))
}

/// What `bench fedavg` measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchFigures {
    /// Nodes averaged.
    pub nodes: usize,
    /// Parameters per update.
    pub params: usize,
    /// Best wall time of one FedAvg over all updates, ms.
    pub fedavg_ms: f64,
    /// Update bytes read per second in that best run, GB/s (1e9 bytes).
    pub fedavg_gbps: f64,
    /// Best wall time of a whole round's numeric work (validate every
    /// update's values and norm, average, apply), ms.
    pub round_ms: f64,
}

/// Measures FedAvg over `nodes` updates of `params` parameters (best of
/// `reps`), and a whole round's numeric work.
pub fn bench_fedavg(nodes: usize, params: usize, reps: usize) -> BenchFigures {
    let updates: Vec<Vec<f32>> = (0..nodes)
        .map(|n| {
            (0..params)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ n) % 1000) as f32 * 1e-6)
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
    let base = vec![0.5f32; params];
    let mut out = vec![0.0f32; params];
    let mut best = f64::INFINITY;
    let mut best_round = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        fedavg(&refs, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let mut ok = 0usize;
        for u in &refs {
            if u.iter().all(|x| x.is_finite()) && l2_norm(u) < f64::MAX {
                ok += 1;
            }
        }
        fedavg(&refs[..ok], &mut out);
        let next = apply_mean(&base, &out, 1);
        std::hint::black_box(&next);
        best_round = best_round.min(t.elapsed().as_secs_f64());
    }
    let bytes = (nodes * params * 4) as f64;
    BenchFigures {
        nodes,
        params,
        fedavg_ms: best * 1e3,
        fedavg_gbps: bytes / best / 1e9,
        round_ms: best_round * 1e3,
    }
}
