//! The numeric side of rounds: reading and validating safetensors model
//! files and updates, the FedAvg kernel (chunked, auto-vectorisable f32
//! loops), evaluating an MLP on a public evaluation set, and the
//! `bench fedavg` figures.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Elements per chunk: the accumulator chunk (32 KiB) stays in L1/L2 while
/// every update streams through it.
pub const CHUNK: usize = 8192;
/// f32 lanes of the inner loops (two SSE registers, one AVX register).
const LANES: usize = 8;

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

/// L2 norm, accumulated in f64 over f32 lanes (the same per-chunk order as
/// [`fedavg`], so both give the same norm for the same values).
pub fn l2_norm(v: &[f32]) -> f64 {
    v.chunks(CHUNK).map(sum_sq).sum::<f64>().sqrt()
}

/// Sum of squares of one chunk: lane `j` of [`LANES`] f32 lanes takes the
/// elements at `j` modulo `LANES` in order, the tail is added in f64, then
/// the lanes in lane order.
fn sum_sq(chunk: &[f32]) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut it = chunk.chunks_exact(LANES);
    for lane in &mut it {
        for (a, x) in acc.iter_mut().zip(lane) {
            *a += x * x;
        }
    }
    let tail = it.remainder().iter().map(|x| f64::from(x * x)).sum::<f64>();
    acc.iter().fold(tail, |t, &a| t + f64::from(a))
}

/// Why an update is left out of a round. The messages go back to the peer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateRejected {
    /// Not as many values as the global model has parameters.
    #[error("wrong length: {got} values, the global model has {want}")]
    WrongLength {
        /// Values in the update.
        got: usize,
        /// Parameters of the global model.
        want: usize,
    },
    /// A NaN or an infinity (checked before the norm).
    #[error("non-finite value (NaN or infinity) at index {index}")]
    NonFinite {
        /// Index of the first non-finite value.
        index: usize,
    },
    /// The L2 norm is above the round's bound (or the bound is NaN).
    #[error("L2 norm {norm:.4} exceeds the bound {bound:.4} (clip norm plus noise allowance)")]
    NormExceeded {
        /// The update's L2 norm.
        norm: f64,
        /// The round's bound.
        bound: f64,
    },
}

/// The verdict on values whose chunked sum of squares is `sum_sq`: a
/// non-finite sum means a non-finite value or an f32 overflow of finite
/// ones, told apart by a second look at `values` (a rare, peer-caused path).
fn verdict(values: &[f32], sum_sq: f64, bound: f64) -> Result<f64, UpdateRejected> {
    let norm = if sum_sq.is_finite() {
        sum_sq.sqrt()
    } else if let Some(index) = values.iter().position(|x| !x.is_finite()) {
        return Err(UpdateRejected::NonFinite { index });
    } else {
        values
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    };
    // A NaN bound rejects everything: fail closed.
    if norm > bound || bound.is_nan() {
        return Err(UpdateRejected::NormExceeded { norm, bound });
    }
    Ok(norm)
}

/// Checks one update's values: all finite, L2 norm at most `bound`; returns
/// the norm. Same rules and same norm as [`fedavg`] gives each update.
pub fn check_values(values: &[f32], bound: f64) -> Result<f64, UpdateRejected> {
    verdict(values, values.chunks(CHUNK).map(sum_sq).sum(), bound)
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
    check_values(&u.values, max_norm).map_err(|e| e.to_string())?;
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

/// Validating FedAvg: checks every update (length, finite values, L2 norm
/// at most `bound`) and writes the mean of the accepted ones to `out`
/// (zeros if none). Returns one verdict per update, in order: its norm, or
/// why it was left out.
///
/// One pass over the updates does both: the parameter range is cut into
/// chunks of [`CHUNK`] values, split into contiguous runs of chunks over up
/// to `threads` scoped threads, and each chunk of `out` stays in L1 while
/// the updates stream through it, [`BLOCK`] at a time (so the accumulator is
/// loaded and stored once per block, and the block's updates are read
/// concurrently), adding into the accumulator and summing squares for the
/// norms. If an update is rejected, a second pass averages the accepted
/// ones (the rejected values already went into the first sum).
///
/// # Summation order (deterministic)
/// Element `i` of the sum is `((0 + u0[i]) + u1[i]) + ...` in f32, updates
/// in slice order, then multiplied by `1 / accepted` in f32. An update's
/// sum of squares is accumulated in f32 lanes per chunk ([`l2_norm`]'s
/// order), converted to f64 per chunk and added in chunk order. Chunk
/// boundaries do not depend on `threads`, so the result is bit-identical
/// for any thread count.
pub fn fedavg(
    updates: &[&[f32]],
    bound: f64,
    threads: usize,
    out: &mut [f32],
) -> Vec<Result<f64, UpdateRejected>> {
    let want = out.len();
    let fits: Vec<&[f32]> = updates
        .iter()
        .copied()
        .filter(|u| u.len() == want)
        .collect();
    let sums = sum_pass(&fits, threads, out);
    let mut fitting = sums.iter().zip(&fits);
    let verdicts: Vec<Result<f64, UpdateRejected>> = updates
        .iter()
        .map(|u| {
            if u.len() != want {
                return Err(UpdateRejected::WrongLength { got: u.len(), want });
            }
            match fitting.next() {
                Some((&s, v)) => verdict(v, s, bound),
                // Unreachable: `fits` holds exactly the updates of this
                // length, in order; fail closed all the same.
                None => Err(UpdateRejected::WrongLength { got: 0, want }),
            }
        })
        .collect();
    let accepted: Vec<&[f32]> = updates
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .map(|(u, _)| *u)
        .collect();
    if accepted.len() != fits.len() {
        sum_pass(&accepted, threads, out);
    }
    verdicts
}

/// Updates averaged together in the inner loop (8 updates x [`LANES`] f32
/// lanes of squares stay in the 16 SSE registers with a few spills).
const BLOCK: usize = 8;

/// `out = mean(updates)` (all of `out.len()` values), returning each
/// update's sum of squares; see [`fedavg`] for the order.
fn sum_pass(updates: &[&[f32]], threads: usize, out: &mut [f32]) -> Vec<f64> {
    let n = updates.len();
    let chunks = out.len().div_ceil(CHUNK);
    let per_thread = chunks.div_ceil(threads.clamp(1, chunks.max(1))) * CHUNK;
    // Per thread: [chunk][update] partial sums of squares, chunks in order.
    let partials: Vec<Vec<f64>> = if per_thread >= out.len() {
        vec![sum_range(updates, 0, out)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = out
                .chunks_mut(per_thread)
                .enumerate()
                .map(|(t, o)| s.spawn(move || sum_range(updates, t * per_thread, o)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut sums = vec![0.0f64; n];
    for chunk in partials.iter().flat_map(|p| p.chunks_exact(n.max(1))) {
        for (s, p) in sums.iter_mut().zip(chunk) {
            *s += p;
        }
    }
    sums
}

/// [`sum_pass`] over `out`, which starts at parameter `lo` (a multiple of
/// [`CHUNK`]).
fn sum_range(updates: &[&[f32]], lo: usize, out: &mut [f32]) -> Vec<f64> {
    let inv = 1.0 / updates.len().max(1) as f32;
    let mut partials = Vec::with_capacity(out.len().div_ceil(CHUNK) * updates.len());
    for (ci, o) in out.chunks_mut(CHUNK).enumerate() {
        let at = lo + ci * CHUNK;
        let range = at..at + o.len();
        o.fill(0.0);
        let mut blocks = updates.chunks_exact(BLOCK);
        for b in &mut blocks {
            let src: [&[f32]; BLOCK] =
                std::array::from_fn(|k| b[k].get(range.clone()).unwrap_or(&[]));
            partials.extend(add_block(o, src));
        }
        for u in blocks.remainder() {
            let [s] = add_block(o, [u.get(range.clone()).unwrap_or(&[])]);
            partials.push(s);
        }
        for x in o.iter_mut() {
            *x *= inv;
        }
    }
    partials
}

/// `acc += src[0] + ... + src[K-1]` (in that order, per element) and each
/// source's sum of squares in [`sum_sq`]'s order. Every source must be as
/// long as `acc` (a shorter one adds nothing: the caller checked lengths).
#[inline(always)]
fn add_block<const K: usize>(acc: &mut [f32], src: [&[f32]; K]) -> [f64; K] {
    let n = acc.len();
    if src.iter().any(|s| s.len() != n) {
        return [0.0; K];
    }
    let body = n - n % LANES;
    let mut sq = [[0.0f32; LANES]; K];
    let (head, tail) = acc.split_at_mut(body);
    for (c, a) in head.chunks_exact_mut(LANES).enumerate() {
        let at = c * LANES;
        let mut v = [0.0f32; LANES];
        v.copy_from_slice(a);
        for (s, q) in src.iter().zip(sq.iter_mut()) {
            let x = &s[at..at + LANES];
            for j in 0..LANES {
                v[j] += x[j];
                q[j] += x[j] * x[j];
            }
        }
        a.copy_from_slice(&v);
    }
    let mut sums = [0.0f64; K];
    for (i, a) in tail.iter_mut().enumerate() {
        for (s, t) in src.iter().zip(sums.iter_mut()) {
            let x = s[body + i];
            *a += x;
            *t += f64::from(x * x);
        }
    }
    for (t, q) in sums.iter_mut().zip(&sq) {
        *t = q.iter().fold(*t, |t, &l| t + f64::from(l));
    }
    sums
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
    /// Threads the kernel and the probe used.
    pub threads: usize,
    /// Best wall time of one validating FedAvg over all updates, ms.
    pub fedavg_ms: f64,
    /// Update bytes validated and averaged per second in that best run,
    /// GB/s (1e9 bytes).
    pub fedavg_gbps: f64,
    /// Best wall time of a whole round's numeric work (validate every
    /// update's values and norm, average, apply), ms.
    pub round_ms: f64,
    /// The limit: best rate of only reading the same update bytes (a sum
    /// over f32 lanes, same threads), GB/s.
    pub mem_read_gbps: f64,
}

/// Measures validating FedAvg over `nodes` updates of `params` parameters
/// on `threads` threads (best of `reps`), a whole round's numeric work, and
/// how fast the same bytes can merely be read.
pub fn bench_fedavg(nodes: usize, params: usize, reps: usize, threads: usize) -> BenchFigures {
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
    let mut best_read = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        std::hint::black_box(read_all(&refs, threads));
        best_read = best_read.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        std::hint::black_box(fedavg(&refs, f64::MAX, threads, &mut out));
        best = best.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let verdicts = fedavg(&refs, f64::MAX, threads, &mut out);
        let n = verdicts.iter().filter(|v| v.is_ok()).count();
        let next = apply_mean(&base, &out, 1);
        std::hint::black_box((&next, n));
        best_round = best_round.min(t.elapsed().as_secs_f64());
    }
    let bytes = (nodes * params * 4) as f64;
    BenchFigures {
        nodes,
        params,
        threads,
        fedavg_ms: best * 1e3,
        fedavg_gbps: bytes / best / 1e9,
        round_ms: best_round * 1e3,
        mem_read_gbps: bytes / best_read / 1e9,
    }
}

/// The memory-bandwidth probe: sums every value of `updates` (each thread
/// streams its share of every update in turn) and nothing else.
fn read_all(updates: &[&[f32]], threads: usize) -> f32 {
    let len = updates.iter().map(|u| u.len()).max().unwrap_or(0);
    let per = len.div_ceil(threads.max(1)).max(1);
    let sum = |lo: usize| {
        let mut acc = [0.0f32; LANES];
        for u in updates {
            let part = u.get(lo..(lo + per).min(u.len())).unwrap_or(&[]);
            for lane in part.chunks_exact(LANES) {
                for (a, x) in acc.iter_mut().zip(lane) {
                    *a += x;
                }
            }
        }
        acc.iter().sum::<f32>()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..len)
            .step_by(per)
            .map(|lo| s.spawn(move || sum(lo)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    })
}
