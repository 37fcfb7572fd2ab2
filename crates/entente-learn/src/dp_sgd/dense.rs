//! Dense layers with ReLU between them (none after the last) and the cross-entropy loss: the
//! whole MLP and the CNN's head. Also the pieces both models share: finding a tensor in the
//! flat parameter vector, building a batch, reading a tensor back.
//!
//! For a batch, one forward pass keeps each layer's input `A_{l-1}` and one backward pass gives
//! the per-example output gradients `delta_L = softmax(Z_L) - onehot(y)` and
//! `delta_l = (delta_{l+1} W_{l+1}) * 1[Z_l > 0]`, all `[batch, width]`. Example `i`'s weight
//! gradient is the outer product `delta_{l,i} A_{l-1,i}^T` and its bias gradient `delta_{l,i}`,
//! so its squared norm is `(||A_{l-1,i}||^2 + 1) * ||delta_{l,i}||^2` and the clipped sum is
//! `(diag(c) delta_l)^T A_{l-1}`: one matmul per layer, no per-example gradient built.

use std::ops::Range;

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};
use entente_core::params::Layout;

use crate::data::Dataset;
use crate::param_store::StoreError;
use crate::trainer::TrainError;

/// The range of tensor `name` in the flat vector of `layout`, checking its shape.
pub(super) fn find(
    layout: &Layout,
    name: &str,
    shape: &[usize],
) -> Result<Range<usize>, TrainError> {
    let i = layout
        .position(name)
        .ok_or_else(|| StoreError::Missing(name.to_string()))?;
    let got = &layout.specs()[i].shape;
    if got != shape {
        return Err(StoreError::Shape {
            name: name.to_string(),
            got: got.clone(),
            expected: shape.to_vec(),
        }
        .into());
    }
    Ok(layout.range(i))
}

/// Features `[batch, dim]` and one-hot labels `[batch, classes]` of `indices`.
pub(super) fn batch(
    data: &Dataset,
    indices: &[usize],
    classes: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let n = indices.len();
    let mut x = Vec::with_capacity(n * data.dim);
    let mut onehot = vec![0f32; n * classes];
    for (row, &i) in indices.iter().enumerate() {
        data.extend_row(i, &mut x);
        onehot[row * classes + data.labels[i] as usize] = 1.0;
    }
    (
        Tensor::from_data(TensorData::new(x, [n, data.dim]), device),
        Tensor::from_data(TensorData::new(onehot, [n, classes]), device),
    )
}

/// A tensor's values, row-major.
pub(super) fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|_| TrainError::ReadLoss)
}

/// A tensor of `shape` holding `flat[range]`.
pub(super) fn tensor<const D: usize>(
    flat: &[f32],
    range: &Range<usize>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(flat[range.clone()].to_vec(), shape), device)
}

/// One dense layer's place in the flat parameter vector (PyTorch layout: weight `[out, in]`).
#[derive(Debug, Clone)]
struct Dense {
    weight: Range<usize>,
    bias: Range<usize>,
    inputs: usize,
    outputs: usize,
}

/// Dense layers, ReLU between them, logits out.
#[derive(Debug)]
pub(super) struct DenseStack {
    layers: Vec<Dense>,
}

/// Activations and output gradients of one batched forward and backward pass.
pub(super) struct DensePass {
    /// Every layer's weight `[out, in]`.
    weights: Vec<Tensor<2>>,
    /// Input of every layer, `A_{l-1}`, `[batch, in_l]`.
    inputs: Vec<Tensor<2>>,
    /// Per-example gradient of each example's loss w.r.t. layer `l`'s pre-activation,
    /// `delta_l`, `[batch, out_l]`.
    deltas: Vec<Tensor<2>>,
    /// Sum of the per-example losses.
    pub(super) loss_sum: f64,
}

impl DenseStack {
    /// Finds the layers named by `(weight, bias)` pairs of `(name, PyTorch shape, fan-in)`.
    pub(super) fn locate(
        layout: &Layout,
        tensors: &[(String, Vec<usize>, usize)],
    ) -> Result<Self, TrainError> {
        let layers = tensors
            .chunks(2)
            .map(|pair| {
                let [(w_name, w_shape, _), (b_name, b_shape, _)] = pair else {
                    unreachable!("a dense layer has a weight and a bias")
                };
                Ok(Dense {
                    weight: find(layout, w_name, w_shape)?,
                    bias: find(layout, b_name, b_shape)?,
                    inputs: w_shape[1],
                    outputs: w_shape[0],
                })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(Self { layers })
    }

    pub(super) fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Batched forward pass from `x` `[batch, in]`, cross-entropy against `onehot`, and the
    /// backward pass down to the first layer's pre-activation.
    pub(super) fn backprop(
        &self,
        flat: &[f32],
        x: Tensor<2>,
        onehot: Tensor<2>,
        device: &Device,
    ) -> DensePass {
        let (weights, biases): (Vec<Tensor<2>>, Vec<Tensor<1>>) = self
            .layers
            .iter()
            .map(|l| {
                (
                    tensor(flat, &l.weight, [l.outputs, l.inputs], device),
                    tensor(flat, &l.bias, [l.outputs], device),
                )
            })
            .unzip();
        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut a = x;
        for (l, (w, b)) in weights.iter().zip(biases).enumerate() {
            let z = a.clone().matmul(w.clone().transpose()) + b.unsqueeze::<2>();
            inputs.push(a);
            a = if l < last { relu(z) } else { z };
        }
        let log_p = log_softmax(a, 1);
        let loss_sum = -f64::from((log_p.clone() * onehot.clone()).sum().into_scalar::<f32>());

        let mut deltas = Vec::with_capacity(self.layers.len());
        let mut delta = log_p.exp() - onehot;
        for l in (0..last).rev() {
            let active = inputs[l + 1].clone().greater_elem(0.0).float();
            let next = delta.clone().matmul(weights[l + 1].clone()) * active;
            deltas.push(delta);
            delta = next;
        }
        deltas.push(delta);
        deltas.reverse();
        DensePass {
            weights,
            inputs,
            deltas,
            loss_sum,
        }
    }

    /// Squared per-example gradient norms of these layers, `[batch, 1]`.
    pub(super) fn squared_norms(&self, pass: &DensePass) -> Tensor<2> {
        pass.inputs
            .iter()
            .zip(&pass.deltas)
            .map(|(a, d)| {
                let a2 = a.clone().powi_scalar(2).sum_dim(1).add_scalar(1.0);
                let d2 = d.clone().powi_scalar(2).sum_dim(1);
                a2 * d2
            })
            .reduce(|x, y| x + y)
            .expect("a dense stack has at least one layer")
    }

    /// Adds `sum_i c_i g_i` of these layers' per-example gradients to `sum`; `factors` is
    /// `[batch, 1]`.
    pub(super) fn add_clipped_sum(
        &self,
        pass: &DensePass,
        factors: &Tensor<2>,
        sum: &mut [f32],
    ) -> Result<(), TrainError> {
        for ((layer, a), d) in self.layers.iter().zip(&pass.inputs).zip(&pass.deltas) {
            let dc = d.clone() * factors.clone();
            let w_grad = read(dc.clone().transpose().matmul(a.clone()))?;
            add(&mut sum[layer.weight.clone()], &w_grad);
            add(&mut sum[layer.bias.clone()], &read(dc.sum_dim(0))?);
        }
        Ok(())
    }

    /// Writes example `i`'s gradient of these layers into `out[i]`, as outer products.
    pub(super) fn materialize(
        &self,
        pass: &DensePass,
        out: &mut [Vec<f32>],
    ) -> Result<(), TrainError> {
        for ((layer, a), d) in self.layers.iter().zip(&pass.inputs).zip(&pass.deltas) {
            let (a, d) = (read(a.clone())?, read(d.clone())?);
            let (fan_in, fan_out) = (layer.inputs, layer.outputs);
            for (i, g) in out.iter_mut().enumerate() {
                let a = &a[i * fan_in..(i + 1) * fan_in];
                let d = &d[i * fan_out..(i + 1) * fan_out];
                let w = &mut g[layer.weight.clone()];
                for (o, &d_o) in d.iter().enumerate() {
                    for (k, &a_k) in a.iter().enumerate() {
                        w[o * fan_in + k] = d_o * a_k;
                    }
                }
                g[layer.bias.clone()].copy_from_slice(d);
            }
        }
        Ok(())
    }
}

impl DensePass {
    /// Per-example gradient of each example's loss w.r.t. the stack's input, `delta_1 W_1`,
    /// `[batch, in]`.
    pub(super) fn input_gradient(&self) -> Tensor<2> {
        self.deltas[0].clone().matmul(self.weights[0].clone())
    }
}

/// `acc += values`, elementwise.
pub(super) fn add(acc: &mut [f32], values: &[f32]) {
    for (a, v) in acc.iter_mut().zip(values) {
        *a += v;
    }
}
