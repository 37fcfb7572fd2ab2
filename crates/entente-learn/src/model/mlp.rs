//! Multilayer perceptron; the default 784-200-200-10 is McMahan et al.'s "2NN".

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Fully connected layers with ReLU in between (none after the last).
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds `input -> hidden[0] -> ... -> classes`.
    pub fn new(input: usize, hidden: &[usize], classes: usize, device: &Device) -> Self {
        let layers = widths(input, hidden, classes)
            .map(|(i, o)| LinearConfig::new(i, o).init(device))
            .collect();
        Self { layers }
    }

    /// Logits for flat inputs.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        let mut x = input;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// `(in, out)` of every layer.
fn widths(input: usize, hidden: &[usize], classes: usize) -> impl Iterator<Item = (usize, usize)> {
    let sizes: Vec<usize> = std::iter::once(input)
        .chain(hidden.iter().copied())
        .chain(std::iter::once(classes))
        .collect();
    (0..sizes.len() - 1).map(move |i| (sizes[i], sizes[i + 1]))
}

/// Parameter names, PyTorch shapes and fan-in, matching `nn.Sequential`-style `layers.{i}`.
pub(super) fn tensor_shapes(
    input: usize,
    hidden: &[usize],
    classes: usize,
) -> Vec<(String, Vec<usize>, usize)> {
    widths(input, hidden, classes)
        .enumerate()
        .flat_map(|(k, (i, o))| {
            [
                (format!("layers.{k}.weight"), vec![o, i], i),
                (format!("layers.{k}.bias"), vec![o], i),
            ]
        })
        .collect()
}
