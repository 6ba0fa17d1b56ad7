//! Attributions by integrated gradients (Sundararajan, Taly and Yan,
//! 2017): for a row `x`, a baseline `b` and the explained output `f`, the
//! attribution of input value `i` is `(x_i - b_i)` times the mean gradient
//! `df/dx_i` over `steps` points on the straight path from `b` to `x`
//! (the midpoint rule). They sum to `f(x) - f(b)` up to the rule's error,
//! which shrinks as `steps` grows (completeness).
//!
//! Every point of every row of a call is one batched forward and backward
//! pass through libtorch's autograd; rows are split into passes of at most
//! [`MAX_PATH_ROWS`] points only to bound memory.

use crate::outcome::InferError;
use infq_common::registry::ModelSpec;
use tch::{CModule, Device, Kind, Tensor};

/// Most path points (rows times steps) in one forward and backward pass.
pub const MAX_PATH_ROWS: usize = 16_384;

/// What a model's attributions need: the baseline row, the steps and the
/// explained output.
#[derive(Debug, Clone)]
pub struct Explainer {
    /// The baseline as one input row.
    pub baseline: Vec<f32>,
    /// Points on the path.
    pub steps: usize,
    /// The explained output's column.
    pub output: usize,
}

impl Explainer {
    /// The explainer of a model version with an `explain` section (the
    /// registry checked that its baseline and output exist).
    pub fn of(spec: &ModelSpec) -> Option<Self> {
        let x = spec.explain.as_ref()?;
        Some(Self {
            baseline: x.baseline_row(&spec.inputs)?,
            steps: x.steps,
            output: x.output_index(&spec.outputs)?,
        })
    }

    /// Attributions of `rows` rows of `width` values: `rows x width`, one
    /// per input value, row-major.
    pub fn attribute(
        &self,
        module: &CModule,
        device: Device,
        kind: Kind,
        inputs: &[f32],
        rows: usize,
        width: usize,
    ) -> Result<Vec<f32>, InferError> {
        let per_pass = (MAX_PATH_ROWS / self.steps).max(1);
        let mut out = Vec::with_capacity(rows * width);
        for part in inputs.chunks(per_pass * width) {
            out.extend(self.pass(module, device, kind, part, part.len() / width, width)?);
        }
        Ok(out)
    }

    fn pass(
        &self,
        module: &CModule,
        device: Device,
        kind: Kind,
        inputs: &[f32],
        rows: usize,
        width: usize,
    ) -> Result<Vec<f32>, InferError> {
        let (n, m, w) = (rows as i64, self.steps as i64, width as i64);
        tch::with_grad(|| {
            let x = Tensor::from_slice(inputs)
                .f_reshape([n, w])?
                .f_to_device(device)?;
            let b = Tensor::from_slice(&self.baseline)
                .f_reshape([1, w])?
                .f_to_device(device)?;
            let diff = x.f_sub(&b)?;
            // Midpoints of `steps` equal parts of [0, 1].
            let alphas = Tensor::f_arange(m, (Kind::Float, device))?
                .f_add_scalar(0.5)?
                .f_div_scalar(m as f64)?
                .f_reshape([1, m, 1])?;
            let path = b
                .f_reshape([1, 1, w])?
                .f_add(&alphas.f_mul(&diff.f_reshape([n, 1, w])?)?)?
                .f_reshape([n * m, w])?
                .f_to_kind(kind)?
                .f_detach()?
                .set_requires_grad(true);
            let y = module.forward_ts(&[&path])?;
            let size = y.size();
            if size.len() != 2 || size[0] != n * m || size[1] <= self.output as i64 {
                return Err(InferError::Shape {
                    shape: size,
                    rows: (n * m) as usize,
                });
            }
            let target = y.f_select(1, self.output as i64)?.f_sum(Kind::Float)?;
            // Checked before and after: libtorch's engine returns an
            // undefined gradient, not an error, where no path leads back.
            if !target.requires_grad() {
                return Err(InferError::Torch(
                    "the output does not depend differentiably on the inputs".into(),
                ));
            }
            let grads = Tensor::f_run_backward(&[&target], &[&path], false, false)?;
            let grad = grads
                .into_iter()
                .next()
                .filter(Tensor::defined)
                .ok_or_else(|| InferError::Torch("the inputs received no gradient".into()))?;
            let attr = grad
                .f_to_kind(Kind::Float)?
                .f_reshape([n, m, w])?
                .f_mean_dim(1, false, Kind::Float)?
                .f_mul(&diff)?
                .f_to_device(Device::Cpu)?
                .f_contiguous()?
                .f_view([-1])?;
            Ok(Vec::<f32>::try_from(&attr)?)
        })
    }
}
