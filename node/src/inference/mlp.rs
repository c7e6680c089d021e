//! A small multi-layer perceptron (linear layers with ReLU between them) as
//! candle tensors, and its safetensors file format.
//!
//! Tensor names follow PyTorch's `nn.Linear` (`l{i}.weight` of shape
//! `[out, in]`, `l{i}.bias` of shape `[out]`), dtype F32, so a file loads in
//! Python's `safetensors` / PyTorch without Veil. The header's
//! `__metadata__` carries `model`, `arch` (`mlp-relu`), `dims`
//! (comma-separated layer widths) and `task`.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::InferenceError;

/// A tensor as (name, shape, F32 values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Class logits; trained with cross-entropy.
    Classification,
    /// One real value; trained with mean squared error.
    Regression,
}

impl Task {
    /// Name in the file's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

/// The shape of a model: its name and layer widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlpSpec {
    /// Model name (also the model's name on the aggregator).
    pub name: &'static str,
    /// Layer widths, input first, output last.
    pub dims: &'static [usize],
    /// What it predicts.
    pub task: Task,
}

impl MlpSpec {
    /// Input width.
    pub fn input(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Output width.
    pub fn output(&self) -> usize {
        self.dims.last().copied().unwrap_or(0)
    }

    /// Every tensor as (name, shape), in canonical order (per layer: weight,
    /// bias).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.dims
            .windows(2)
            .enumerate()
            .flat_map(|(i, w)| {
                [
                    (format!("l{i}.weight"), vec![w[1], w[0]]),
                    (format!("l{i}.bias"), vec![w[1]]),
                ]
            })
            .collect()
    }

    /// Number of parameters.
    pub fn parameters(&self) -> usize {
        self.tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// The `__metadata__` of the model's safetensors file.
    pub fn metadata(&self) -> HashMap<String, String> {
        let dims = self
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        HashMap::from([
            ("model".to_owned(), self.name.to_owned()),
            ("arch".to_owned(), "mlp-relu".to_owned()),
            ("dims".to_owned(), dims),
            ("task".to_owned(), self.task.as_str().to_owned()),
            ("format".to_owned(), "pt".to_owned()),
        ])
    }
}

/// An MLP ready to run.
#[derive(Debug, Clone)]
pub struct Mlp {
    spec: MlpSpec,
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds the layers from `vb` (weights from a file or fresh variables).
    pub(crate) fn build(spec: MlpSpec, vb: &VarBuilder<'_>) -> Result<Self, InferenceError> {
        let layers = spec
            .dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("l{i}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { spec, layers })
    }

    /// Loads `bytes` (a safetensors file) with candle's safe buffered
    /// loader, after checking every tensor's name, shape and dtype against
    /// `spec`.
    pub fn from_safetensors(spec: MlpSpec, bytes: &[u8]) -> Result<Self, InferenceError> {
        check_file(&spec, bytes)?;
        let vb = VarBuilder::from_buffered_safetensors(bytes.to_vec(), DType::F32, &Device::Cpu)?;
        Self::build(spec, &vb)
    }

    /// Fresh trainable variables in `varmap` (candle's default init).
    pub(crate) fn fresh(spec: MlpSpec, varmap: &VarMap) -> Result<Self, InferenceError> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        Self::build(spec, &vb)
    }

    /// The spec.
    pub fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    /// `x` of shape `[n, input]` to `[n, output]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, InferenceError> {
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Runs the model on `rows` (each of width `input`), returning `[n,
    /// output]` as nested vectors.
    pub fn predict(&self, rows: &[f32]) -> Result<Vec<Vec<f32>>, InferenceError> {
        let d = self.spec.input();
        if d == 0 || !rows.len().is_multiple_of(d) {
            return Err(InferenceError::Shape(format!(
                "{} inputs is not a multiple of {d}",
                rows.len()
            )));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let x = Tensor::from_slice(rows, (rows.len() / d, d), &Device::Cpu)?;
        Ok(self.forward(&x)?.to_vec2::<f32>()?)
    }

    /// Every tensor's values in canonical order (see [`MlpSpec::tensors`]).
    pub fn parameters(&self) -> Result<Vec<NamedTensor>, InferenceError> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let w = l.weight();
            out.push((
                format!("l{i}.weight"),
                w.dims().to_vec(),
                w.flatten_all()?.to_vec1::<f32>()?,
            ));
            if let Some(b) = l.bias() {
                out.push((format!("l{i}.bias"), b.dims().to_vec(), b.to_vec1::<f32>()?));
            }
        }
        Ok(out)
    }

    /// This model as a safetensors file.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, InferenceError> {
        encode(&self.spec.metadata(), &self.parameters()?)
    }
}

/// Checks that `bytes` is a safetensors file holding exactly `spec`'s
/// tensors, F32, with the right shapes.
pub fn check_file(spec: &MlpSpec, bytes: &[u8]) -> Result<(), InferenceError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| InferenceError::Format(format!("not a safetensors file: {e}")))?;
    let want = spec.tensors();
    if st.len() != want.len() {
        return Err(InferenceError::Format(format!(
            "{} tensors, expected {}",
            st.len(),
            want.len()
        )));
    }
    for (name, shape) in want {
        let t = st
            .tensor(&name)
            .map_err(|_| InferenceError::Format(format!("tensor {name} missing")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(InferenceError::Format(format!(
                "tensor {name}: {:?} {:?}, expected F32 {shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
    }
    Ok(())
}

/// Encodes named F32 tensors as a safetensors file with `metadata`.
pub fn encode(
    metadata: &HashMap<String, String>,
    tensors: &[NamedTensor],
) -> Result<Vec<u8>, InferenceError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| InferenceError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| InferenceError::Format(e.to_string()))
}

/// Reads every tensor of a safetensors file as F32 (name, shape, values).
pub fn decode(bytes: &[u8]) -> Result<Vec<NamedTensor>, InferenceError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| InferenceError::Format(format!("not a safetensors file: {e}")))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let t = st
                .tensor(&name)
                .map_err(|e| InferenceError::Format(e.to_string()))?;
            if t.dtype() != Dtype::F32 {
                return Err(InferenceError::Format(format!("tensor {name} is not F32")));
            }
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((name, t.shape().to_vec(), values))
        })
        .collect()
}
