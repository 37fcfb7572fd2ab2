//! The CNN of McMahan et al. (2017): two 5x5 convolutions (32 and 64 channels, "same"
//! padding), each followed by 2x2 max pooling, then a dense layer of 512 and the output layer.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

const C1: usize = 32;
const C2: usize = 64;
const DENSE: usize = 512;
const K: usize = 5;

/// Convolutional network for small images.
#[derive(Module, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    channels: usize,
    height: usize,
    width: usize,
}

impl Cnn {
    /// Builds the network for `channels x height x width` inputs.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
        device: &Device,
    ) -> Self {
        let same = || PaddingConfig2d::Explicit(K / 2, K / 2, K / 2, K / 2);
        Self {
            conv1: Conv2dConfig::new([channels, C1], [K, K])
                .with_padding(same())
                .init(device),
            conv2: Conv2dConfig::new([C1, C2], [K, K])
                .with_padding(same())
                .init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(flat_features(height, width), DENSE).init(device),
            fc2: LinearConfig::new(DENSE, classes).init(device),
            channels,
            height,
            width,
        }
    }

    /// Logits for flat inputs `[batch, channels * height * width]`.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let [batch, _] = input.dims();
        let x = input.reshape([batch, self.channels, self.height, self.width]);
        let x = self.pool.forward(relu(self.conv1.forward(x)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        let x = x.flatten::<2>(1, 3);
        self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

/// Features entering the dense layer after two 2x2 poolings.
fn flat_features(height: usize, width: usize) -> usize {
    C2 * (height / 4) * (width / 4)
}

/// Parameter names, PyTorch shapes and fan-in.
pub(super) fn tensor_shapes(
    channels: usize,
    height: usize,
    width: usize,
    classes: usize,
) -> Vec<(String, Vec<usize>, usize)> {
    let flat = flat_features(height, width);
    vec![
        (
            "conv1.weight".into(),
            vec![C1, channels, K, K],
            channels * K * K,
        ),
        ("conv1.bias".into(), vec![C1], channels * K * K),
        ("conv2.weight".into(), vec![C2, C1, K, K], C1 * K * K),
        ("conv2.bias".into(), vec![C2], C1 * K * K),
        ("fc1.weight".into(), vec![DENSE, flat], flat),
        ("fc1.bias".into(), vec![DENSE], flat),
        ("fc2.weight".into(), vec![classes, DENSE], DENSE),
        ("fc2.bias".into(), vec![classes], DENSE),
    ]
}
