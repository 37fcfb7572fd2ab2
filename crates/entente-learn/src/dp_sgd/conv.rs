//! The CNN's convolutional trunk (see [`crate::model::Cnn`]): per-example gradients of its
//! convolutions from one batched forward and backward pass.
//!
//! Each block is a `k x k` convolution (stride 1, "same" zero padding `k / 2`), ReLU and 2x2
//! max pooling (stride 2, floor), built from the same burn ops the model's modules call, so the
//! forward pass gives the model's outputs. Backward, per example, batched over the examples:
//!
//! - max pooling sends each output's gradient to the input position that won, as recorded by
//!   `max_pool2d_with_indices` (the indices burn's autodiff uses, so ties break the same way);
//! - ReLU masks it with `1[A > 0]`, which gives `delta_l = dL_i / dZ_l`, `[batch, out, h, w]`;
//! - the gradient w.r.t. the block's input is the transposed convolution of `delta_l` with the
//!   weight (skipped for the first block, whose input is the data).
//!
//! Example `i`'s weight gradient is `delta_{l,i} U_{l,i}^T` (Goodfellow 2015, "Efficient
//! per-example gradient computations"; Opacus's conv grad sampler), where
//! `U_{l,i} = unfold(A_{l-1,i})` is the `[in * k * k, h * w]` im2col matrix of the zero-padded
//! input and `delta_{l,i}` is `[out, h * w]`: one batched matmul per layer,
//! `[batch, out, h * w] x [batch, h * w, in * k * k]`, whose rows are laid out as PyTorch's
//! `[out, in, k, k]`. The bias gradient is `delta_{l,i}` summed over positions. Unlike the dense
//! layers there is no cheap closed form for the norm, so these gradients are materialized,
//! `out * in * k * k` values per example and layer (51,200 for the second convolution); the
//! caller bounds their memory by processing a batch in chunks ([`ConvTrunk::floats_per_example`]).
//!
//! The im2col matrices are built on the host ([`im2col`], contiguous row-segment copies). On
//! the flex backend that took about a third less time than burn's alternatives, which either
//! run a convolution with a one-hot kernel of `in * k * k` output channels (`unfold4d` with
//! padding) or copy a 6-dimensional strided view (unfolding a padded tensor).

use std::ops::Range;

use burn::tensor::activation::relu;
use burn::tensor::module::{
    conv_transpose2d, conv2d, max_pool2d_with_indices, max_pool2d_with_indices_backward,
};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use entente_core::params::Layout;

use super::dense::{add, find, read, tensor};
use crate::trainer::TrainError;

/// The model's pooling window and stride.
const POOL: usize = 2;

/// One convolution's place in the flat parameter vector (weight `[out, in, k, k]`).
#[derive(Debug, Clone)]
struct Conv {
    weight: Range<usize>,
    bias: Range<usize>,
    outputs: usize,
    inputs: usize,
    kernel: usize,
    /// Height and width of the block's input (and of the convolution's output).
    size: [usize; 2],
}

/// The convolution blocks in order, and the shape of the data they take.
#[derive(Debug)]
pub(super) struct ConvTrunk {
    convs: Vec<Conv>,
    /// `[channels, height, width]` of an example.
    input: [usize; 3],
}

/// What the backward pass needs of the forward pass: each block's input, its ReLU output and
/// the pooling indices, and each convolution's weight.
pub(super) struct TrunkCache {
    inputs: Vec<Tensor<4>>,
    activations: Vec<Tensor<4>>,
    indices: Vec<Tensor<4, Int>>,
    weights: Vec<Tensor<4>>,
    /// Shape of the trunk's output, `[batch, channels, height, width]`.
    output: [usize; 4],
}

/// Per-example gradients of one convolution: weights `[batch, out, in * k * k]`, biases
/// `[batch, out]`.
pub(super) struct ConvGrads {
    weight: Tensor<3>,
    bias: Tensor<2>,
}

impl ConvTrunk {
    /// Finds the convolutions named by `(weight, bias)` pairs of `(name, PyTorch shape,
    /// fan-in)` for `[channels, height, width]` inputs.
    pub(super) fn locate(
        layout: &Layout,
        tensors: &[(String, Vec<usize>, usize)],
        input: [usize; 3],
    ) -> Result<Self, TrainError> {
        let [_, mut height, mut width] = input;
        let convs = tensors
            .chunks(2)
            .map(|pair| {
                let [(w_name, w_shape, _), (b_name, b_shape, _)] = pair else {
                    unreachable!("a convolution has a weight and a bias")
                };
                let &[outputs, inputs, kernel, kernel_w] = w_shape.as_slice() else {
                    unreachable!("a convolution weight is [out, in, k, k]")
                };
                assert_eq!(kernel, kernel_w, "the model's kernels are square");
                let conv = Conv {
                    weight: find(layout, w_name, w_shape)?,
                    bias: find(layout, b_name, b_shape)?,
                    outputs,
                    inputs,
                    kernel,
                    size: [height, width],
                };
                (height, width) = (height / POOL, width / POOL);
                Ok(conv)
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(Self { convs, input })
    }

    /// About how many `f32` one example occupies in a pass: its im2col matrices, its
    /// per-example weight gradients and its activations.
    pub(super) fn floats_per_example(&self) -> usize {
        self.convs
            .iter()
            .map(|c| {
                let positions = c.size[0] * c.size[1];
                let patch = c.inputs * c.kernel * c.kernel;
                patch * positions + c.outputs * patch + 4 * c.outputs * positions
            })
            .sum()
    }

    /// Batched forward pass of flat examples `x` `[batch, channels * height * width]`: the
    /// flattened output `[batch, features]` and what the backward pass needs.
    pub(super) fn forward(
        &self,
        flat: &[f32],
        x: Tensor<2>,
        device: &Device,
    ) -> (Tensor<2>, TrunkCache) {
        let [batch, _] = x.dims();
        let [c, h, w] = self.input;
        let mut a = x.reshape([batch, c, h, w]);
        let mut cache = TrunkCache {
            inputs: Vec::with_capacity(self.convs.len()),
            activations: Vec::with_capacity(self.convs.len()),
            indices: Vec::with_capacity(self.convs.len()),
            weights: Vec::with_capacity(self.convs.len()),
            output: [batch, c, h, w],
        };
        for conv in &self.convs {
            let k = conv.kernel;
            let weight = tensor(
                flat,
                &conv.weight,
                [conv.outputs, conv.inputs, k, k],
                device,
            );
            let bias = tensor(flat, &conv.bias, [conv.outputs], device);
            let activation = relu(conv2d(
                a.clone(),
                weight.clone(),
                Some(bias),
                conv.options(),
            ));
            let (pooled, indices) =
                max_pool2d_with_indices(activation.clone(), MaxPoolOptions::new([POOL, POOL]));
            cache.inputs.push(a);
            cache.activations.push(activation);
            cache.indices.push(indices);
            cache.weights.push(weight);
            a = pooled;
        }
        cache.output = a.dims();
        (a.flatten::<2>(1, 3), cache)
    }

    /// Batched backward pass from the gradient w.r.t. the flattened output, `[batch,
    /// features]`: every convolution's per-example gradients.
    pub(super) fn backward(
        &self,
        cache: TrunkCache,
        grad: Tensor<2>,
    ) -> Result<Vec<ConvGrads>, TrainError> {
        let mut grad = Some(grad.reshape(cache.output));
        let mut grads = Vec::with_capacity(self.convs.len());
        let blocks = self
            .convs
            .iter()
            .zip(cache.inputs)
            .zip(cache.activations)
            .zip(cache.indices)
            .zip(cache.weights)
            .enumerate()
            .rev();
        for (l, ((((conv, input), activation), indices), weight)) in blocks {
            let unpooled = max_pool2d_with_indices_backward(
                activation.clone(),
                [POOL, POOL],
                [POOL, POOL],
                [0, 0],
                [1, 1],
                false,
                grad.take().expect("the block above set the gradient"),
                indices,
            );
            let delta = unpooled * activation.greater_elem(0.0).float();
            // The first block's input is the data, which needs no gradient.
            if l > 0 {
                let p = conv.kernel / 2;
                let options = ConvTransposeOptions::new([1, 1], [p, p], [0, 0], [1, 1], 1);
                grad = Some(conv_transpose2d(delta.clone(), weight, None, options));
            }
            grads.push(conv.per_example(input, delta)?);
        }
        grads.reverse();
        Ok(grads)
    }

    /// Squared per-example gradient norms of the convolutions, `[batch, 1]`.
    pub(super) fn squared_norms(&self, grads: &[ConvGrads]) -> Tensor<2> {
        grads
            .iter()
            .map(|g| {
                let [batch, _, _] = g.weight.dims();
                let w2 = g.weight.clone().powi_scalar(2).sum_dim(2).sum_dim(1);
                w2.reshape([batch, 1]) + g.bias.clone().powi_scalar(2).sum_dim(1)
            })
            .reduce(|x, y| x + y)
            .expect("the trunk has at least one convolution")
    }

    /// Adds `sum_i c_i g_i` of the convolutions' per-example gradients to `sum`; `factors` is
    /// `[batch, 1]`.
    pub(super) fn add_clipped_sum(
        &self,
        grads: &[ConvGrads],
        factors: &Tensor<2>,
        sum: &mut [f32],
    ) -> Result<(), TrainError> {
        for (conv, g) in self.convs.iter().zip(grads) {
            let c3 = factors.clone().unsqueeze_dim::<3>(2);
            let w = (g.weight.clone() * c3).sum_dim(0);
            add(&mut sum[conv.weight.clone()], &read(w)?);
            let b = (g.bias.clone() * factors.clone()).sum_dim(0);
            add(&mut sum[conv.bias.clone()], &read(b)?);
        }
        Ok(())
    }

    /// Writes example `i`'s gradient of the convolutions into `out[i]`.
    pub(super) fn materialize(
        &self,
        grads: &[ConvGrads],
        out: &mut [Vec<f32>],
    ) -> Result<(), TrainError> {
        for (conv, g) in self.convs.iter().zip(grads) {
            let (w, b) = (read(g.weight.clone())?, read(g.bias.clone())?);
            let (nw, nb) = (conv.weight.len(), conv.bias.len());
            for (i, example) in out.iter_mut().enumerate() {
                example[conv.weight.clone()].copy_from_slice(&w[i * nw..(i + 1) * nw]);
                example[conv.bias.clone()].copy_from_slice(&b[i * nb..(i + 1) * nb]);
            }
        }
        Ok(())
    }
}

impl Conv {
    /// The model's options: stride 1, "same" padding (the module's explicit `k / 2` pairs).
    fn options(&self) -> ConvOptions<2> {
        let p = self.kernel / 2;
        ConvOptions::new_with_padding([1, 1], [(p, p), (p, p)], [1, 1], 1)
    }

    /// Per-example gradients from the block's input `[batch, in, h, w]` and `delta`
    /// `[batch, out, h, w]`.
    fn per_example(&self, input: Tensor<4>, delta: Tensor<4>) -> Result<ConvGrads, TrainError> {
        let dims = input.dims();
        let [batch, _, h, w] = dims;
        let k = self.kernel;
        let device = input.device();
        let patches = im2col(&read(input)?, dims, k);
        let patches: Tensor<3> = Tensor::from_data(
            TensorData::new(patches, [batch, self.inputs * k * k, h * w]),
            &device,
        );
        let delta = delta.reshape([batch, self.outputs, h * w]);
        let weight = delta.clone().matmul(patches.swap_dims(1, 2));
        Ok(ConvGrads {
            weight,
            bias: delta.sum_dim(2).reshape([batch, self.outputs]),
        })
    }
}

/// im2col of `input` `[batch, channels, h, w]` zero-padded by `k / 2` on every side:
/// `[batch, channels * k * k, h * w]`, rows in PyTorch's `[channels, k, k]` weight order, so
/// that row `(c, ky, kx)`, column `y * w + x` holds `input[c, y + ky - k / 2, x + kx - k / 2]`
/// (0 outside the image). Built row segment by row segment, each a contiguous copy.
fn im2col(input: &[f32], [batch, channels, h, w]: [usize; 4], k: usize) -> Vec<f32> {
    let (p, positions) = (k / 2, h * w);
    let mut out = vec![0f32; batch * channels * k * k * positions];
    // One channel of one example: its image and its k * k rows.
    for (image, rows) in input
        .chunks_exact(positions)
        .zip(out.chunks_exact_mut(k * k * positions))
    {
        for (row, (ky, kx)) in rows
            .chunks_exact_mut(positions)
            .zip((0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))))
        {
            // Columns whose source x + kx - p lies inside the image.
            let (x0, x1) = (p.saturating_sub(kx), (w + p).saturating_sub(kx).min(w));
            if x0 >= x1 {
                continue;
            }
            for y in 0..h {
                let Some(sy) = (y + ky).checked_sub(p).filter(|&sy| sy < h) else {
                    continue;
                };
                let src = sy * w + x0 + kx - p;
                row[y * w + x0..y * w + x1].copy_from_slice(&image[src..src + x1 - x0]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of the im2col matrix against its definition, on odd, unequal sides.
    #[test]
    fn im2col_matches_its_definition() {
        let (batch, channels, h, w, k) = (2, 3, 5, 4, 5);
        let input: Vec<f32> = (0..batch * channels * h * w)
            .map(|v| v as f32 + 1.0)
            .collect();
        let out = im2col(&input, [batch, channels, h, w], k);
        let p = k as isize / 2;
        let mut checked = 0;
        for b in 0..batch {
            for c in 0..channels {
                for ky in 0..k {
                    for kx in 0..k {
                        for y in 0..h {
                            for x in 0..w {
                                let (sy, sx) =
                                    (y as isize + ky as isize - p, x as isize + kx as isize - p);
                                let expected = if (0..h as isize).contains(&sy)
                                    && (0..w as isize).contains(&sx)
                                {
                                    input[((b * channels + c) * h + sy as usize) * w + sx as usize]
                                } else {
                                    0.0
                                };
                                let row = (c * k + ky) * k + kx;
                                let got = out[(b * channels * k * k + row) * h * w + y * w + x];
                                assert_eq!(
                                    got, expected,
                                    "b {b} c {c} ky {ky} kx {kx} y {y} x {x}"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, out.len());
    }
}
