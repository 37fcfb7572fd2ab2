"""Tests of the PyTorch and Keras adapters (``entente.torch``, ``entente.keras``).

The cross-framework tests build the same network in both frameworks, copy the weights
one way through entente's canonical layout, and check that both compute the same outputs
on the same (seeded) batch: NCHW images for PyTorch, the same images transposed to NHWC
for Keras.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import ml_dtypes  # noqa: E402  (a dependency of keras and tensorflow)
from torch import nn  # noqa: E402

import entente.keras as entente_keras  # noqa: E402
import entente.torch as entente_torch  # noqa: E402
from entente import _layout  # noqa: E402

# Outputs of the two frameworks agree to this much (float32, different kernels).
ATOL = 1e-4

# Canonical names of the weighted layers of `torch_cnn()`, for the Keras twin.
CNN_NAMES = ["0", "3", "7", "9"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)  # Python, numpy and the backend


def images(batch: int, channels: int, size: int, seed: int = 1) -> np.ndarray:
    """A seeded batch of NCHW float32 images."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, channels, size, size), dtype=np.float32)


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def torch_forward(module: nn.Module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def keras_forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def assert_same_params(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].dtype == np.float32, name
        assert actual[name].flags.c_contiguous, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


# --- models ------------------------------------------------------------------------


class TorchMLP(nn.Module):
    """784-512-256-10 with ReLU; its state dict names are layers.{0,1,2}.{weight,bias}."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # NCHW flattening
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def keras_mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def torch_cnn() -> nn.Module:
    """Input 1x28x28; weighted layers 0, 3, 7, 9."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def keras_cnn() -> keras.Model:
    """The twin of `torch_cnn`, on 28x28x1 inputs."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


# --- 1. Dense stack ----------------------------------------------------------------


def test_dense_stack_has_the_same_names_and_shapes_in_both_frameworks() -> None:
    torch_params = entente_torch.get_params(TorchMLP())
    keras_params = entente_keras.get_params(keras_mlp())
    assert (
        list(keras_params)
        == list(torch_params)
        == [
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias",
            "layers.2.weight",
            "layers.2.bias",
        ]
    )
    for name, value in torch_params.items():
        assert keras_params[name].shape == value.shape, name


def test_dense_stack_torch_to_keras_computes_the_same() -> None:
    source, target = TorchMLP(), keras_mlp()
    x = images(16, 1, 28)
    entente_keras.set_params(target, entente_torch.get_params(source))
    expected = torch_forward(source, x)
    np.testing.assert_allclose(keras_forward(target, x.reshape(16, -1)), expected, atol=ATOL)


def test_dense_stack_keras_to_torch_computes_the_same() -> None:
    source, target = keras_mlp(), TorchMLP()
    x = images(16, 1, 28)
    entente_torch.set_params(target, entente_keras.get_params(source))
    expected = keras_forward(source, x.reshape(16, -1))
    np.testing.assert_allclose(torch_forward(target, x), expected, atol=ATOL)


# --- 2. Convolutions and the flatten order -----------------------------------------


def test_flat_order_maps_nhwc_flattening_to_nchw_flattening() -> None:
    height, width, channels = 3, 4, 5
    perm = _layout.nhwc_to_nchw_flat_order(height, width, channels)
    c, h, w = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width), indexing="ij")
    np.testing.assert_array_equal(
        perm[(c * height * width + h * width + w).ravel()],
        ((h * width + w) * channels + c).ravel(),
    )
    x = np.random.default_rng(0).standard_normal((channels, height, width))
    np.testing.assert_array_equal(x.transpose(1, 2, 0).reshape(-1)[perm], x.reshape(-1))
    assert not np.array_equal(perm, np.arange(perm.size))


@pytest.mark.parametrize("shape", [(1, 1, 7), (5, 3, 1)], ids=["1x1x7", "5x3x1"])
def test_flat_order_is_the_identity_without_spatial_or_channel_extent(
    shape: tuple[int, int, int],
) -> None:
    perm = _layout.nhwc_to_nchw_flat_order(*shape)
    np.testing.assert_array_equal(perm, np.arange(perm.size))


def test_cnn_torch_to_keras_computes_the_same() -> None:
    source, target = torch_cnn(), keras_cnn()
    x = images(4, 1, 28)
    entente_keras.set_params(target, entente_torch.get_params(source), names=CNN_NAMES)
    np.testing.assert_allclose(keras_forward(target, nhwc(x)), torch_forward(source, x), atol=ATOL)


def test_cnn_keras_to_torch_computes_the_same() -> None:
    source, target = keras_cnn(), torch_cnn()
    x = images(4, 1, 28)
    entente_torch.set_params(target, entente_keras.get_params(source, names=CNN_NAMES))
    np.testing.assert_allclose(torch_forward(target, x), keras_forward(source, nhwc(x)), atol=ATOL)


def test_cnn_copied_without_the_row_permutation_computes_something_else() -> None:
    source, target = torch_cnn(), keras_cnn()
    x = images(4, 1, 28)
    params = entente_torch.get_params(source)
    entente_keras.set_params(target, params, names=CNN_NAMES)
    expected = torch_forward(source, x)
    np.testing.assert_allclose(keras_forward(target, nhwc(x)), expected, atol=ATOL)

    # Transpose only, as for a Dense layer that does not read a Flatten: shapes match.
    dense = target.layers[5]
    assert isinstance(dense, keras.layers.Dense)
    dense.kernel.assign(params["7.weight"].T)
    naive = keras_forward(target, nhwc(x))
    assert np.abs(naive - expected).max() > 100 * ATOL


def test_keras_cnn_set_then_get_is_the_identity() -> None:
    params = entente_torch.get_params(torch_cnn())
    model = keras_cnn()
    entente_keras.set_params(model, params, names=CNN_NAMES)
    assert_same_params(entente_keras.get_params(model, names=CNN_NAMES), params)


def test_reshape_to_one_dimension_flattens_and_grouped_conv_maps() -> None:
    source = nn.Sequential(
        nn.Conv2d(4, 6, 3, groups=2, stride=2), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)
    )
    target = keras.Sequential(
        [
            keras.Input((9, 9, 4)),
            keras.layers.Conv2D(6, 3, groups=2, strides=2),
            keras.layers.Reshape((-1,)),
            keras.layers.Dense(3),
        ]
    )
    entente_keras.set_params(target, entente_torch.get_params(source), names=["0", "2"])
    x = images(2, 4, 9)
    np.testing.assert_allclose(keras_forward(target, nhwc(x)), torch_forward(source, x), atol=ATOL)


def test_every_dense_reading_a_flatten_is_permuted() -> None:
    # Two heads read the same Flatten; checked against the canonical (NCHW) semantics.
    inputs = keras.Input((4, 5, 3))
    flat = keras.layers.Flatten()(inputs)
    head_a = keras.layers.Dense(2)(flat)
    head_b = keras.layers.Dense(3)(keras.layers.Dropout(0.5)(flat))
    model = keras.Model(inputs, keras.layers.Concatenate()([head_a, head_b]))
    params = entente_keras.get_params(model, names=["a", "b"])

    x = np.random.default_rng(2).standard_normal((6, 3, 4, 5), dtype=np.float32)
    x_flat = x.reshape(6, -1)  # NCHW flattening
    expected = np.concatenate(
        [
            x_flat @ params["a.weight"].T + params["a.bias"],
            x_flat @ params["b.weight"].T + params["b.bias"],
        ],
        axis=1,
    )
    np.testing.assert_allclose(keras_forward(model, nhwc(x)), expected, atol=ATOL)


# --- 3. Round trips and dtypes -----------------------------------------------------


def test_torch_set_then_get_is_the_identity() -> None:
    params = entente_torch.get_params(torch_cnn())
    module = torch_cnn()  # other initial values
    entente_torch.set_params(module, params)
    assert_same_params(entente_torch.get_params(module), params)


def test_torch_get_params_returns_copies() -> None:
    module = TorchMLP()
    params = entente_torch.get_params(module)
    params["layers.0.bias"][:] = 42.0
    assert not torch.any(module.layers[0].bias == 42.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_torch_low_precision_module_exchanges_float32(dtype: torch.dtype) -> None:
    module = TorchMLP().to(dtype)
    params = entente_torch.get_params(module)
    for name, tensor in module.state_dict().items():
        assert params[name].dtype == np.float32, name
        np.testing.assert_array_equal(params[name], tensor.float().numpy(), err_msg=name)

    new = entente_torch.get_params(TorchMLP())  # float32 values
    entente_torch.set_params(module, new)
    for name, tensor in module.state_dict().items():
        assert tensor.dtype == dtype, name
        assert torch.equal(tensor, torch.from_numpy(new[name]).to(dtype)), name


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_keras_low_precision_layer_exchanges_float32(dtype: str) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, dtype=dtype)])
    params = entente_keras.get_params(model)
    assert {name: value.dtype for name, value in params.items()} == {
        "layers.0.weight": np.float32,
        "layers.0.bias": np.float32,
    }

    rng = np.random.default_rng(3)
    new = {name: rng.standard_normal(v.shape, dtype=np.float32) for name, v in params.items()}
    entente_keras.set_params(model, new)
    dense = model.layers[0]
    assert dense.kernel.dtype == dense.bias.dtype == dtype
    rounded = getattr(ml_dtypes, dtype) if dtype == "bfloat16" else np.float16
    back = entente_keras.get_params(model)
    for name, value in new.items():
        np.testing.assert_array_equal(
            back[name], value.astype(rounded).astype(np.float32), err_msg=name
        )


# --- 4. BatchNorm ------------------------------------------------------------------


def torch_bn_net() -> nn.Module:
    """Input 3x8x8; BatchNorm on a feature map and on flattened features."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.BatchNorm1d(4 * 4 * 4),
        nn.Linear(4 * 4 * 4, 5),
    )


def test_torch_batch_norm_counter_stays_local() -> None:
    trained = torch_bn_net().train()
    for seed in range(3):
        trained(torch.from_numpy(images(8, 3, 8, seed=seed)))
    params = entente_torch.get_params(trained)
    state = trained.state_dict()
    assert list(params) == [name for name in state if not name.endswith("num_batches_tracked")]
    assert "1.running_mean" in params and "1.running_var" in params

    other = torch_bn_net().train()
    other(torch.from_numpy(images(8, 3, 8, seed=9)))
    entente_torch.set_params(other, params)
    assert int(other[1].num_batches_tracked) == 1
    assert int(other[5].num_batches_tracked) == 1
    assert int(trained[1].num_batches_tracked) == 3
    for name in ("1.running_mean", "1.running_var", "5.running_mean", "5.running_var"):
        assert torch.equal(other.state_dict()[name], state[name]), name


def test_batch_norm_torch_to_keras_computes_the_same() -> None:
    source = torch_bn_net()
    for bn in (source[1], source[5]):  # stats and affine values that matter
        with torch.no_grad():
            bn.running_mean.uniform_(-1.0, 1.0)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    target = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(epsilon=1e-5),  # torch's default epsilon
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(epsilon=1e-5),
            keras.layers.Dense(5),
        ]
    )
    names = ["0", "1", "5", "6"]
    params = entente_torch.get_params(source)
    entente_keras.set_params(target, params, names=names)
    x = images(8, 3, 8)
    np.testing.assert_allclose(keras_forward(target, nhwc(x)), torch_forward(source, x), atol=ATOL)
    assert_same_params(entente_keras.get_params(target, names=names), params)


# --- 5. Errors ---------------------------------------------------------------------


def broken(params: dict[str, np.ndarray], case: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """`params` with one problem, and the strings the error message must contain."""
    params = dict(params)
    if case == "wrong shape":
        params["layers.1.weight"] = np.zeros((512, 256), np.float32)
        return params, ["'layers.1.weight'", "(256, 512)", "(512, 256)"]
    if case == "missing":
        del params["layers.2.bias"]
        return params, ["missing", "'layers.2.bias'", "(10,)"]
    if case == "unknown":
        params["layers.3.weight"] = np.zeros((10, 10), np.float32)
        return params, ["unknown", "'layers.3.weight'"]
    if case == "not float":
        params["layers.0.bias"] = np.zeros(512, np.int32)
        return params, ["'layers.0.bias'", "int32"]
    raise AssertionError(case)


ERROR_CASES = ["wrong shape", "missing", "unknown", "not float"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_torch_set_params_rejects_and_names_the_tensor(case: str) -> None:
    module = TorchMLP()
    before = entente_torch.get_params(module)
    params, fragments = broken(entente_torch.get_params(TorchMLP()), case)
    with pytest.raises(ValueError) as error:
        entente_torch.set_params(module, params)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert_same_params(entente_torch.get_params(module), before)  # nothing written


@pytest.mark.parametrize("case", ERROR_CASES)
def test_keras_set_params_rejects_and_names_the_tensor(case: str) -> None:
    model = keras_mlp()
    before = entente_keras.get_params(model)
    params, fragments = broken(entente_torch.get_params(TorchMLP()), case)
    with pytest.raises(ValueError) as error:
        entente_keras.set_params(model, params)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert_same_params(entente_keras.get_params(model), before)


def test_set_params_without_strict_skips_missing_and_unknown_names() -> None:
    source = entente_torch.get_params(TorchMLP())
    for get, set_, model in (
        (entente_torch.get_params, entente_torch.set_params, TorchMLP()),
        (entente_keras.get_params, entente_keras.set_params, keras_mlp()),
    ):
        before = get(model)
        params = {name: v for name, v in source.items() if name != "layers.0.weight"}
        params["extra"] = np.zeros(3, np.float32)
        set_(model, params, strict=False)
        after = get(model)
        np.testing.assert_array_equal(after["layers.0.weight"], before["layers.0.weight"])
        np.testing.assert_array_equal(after["layers.1.weight"], source["layers.1.weight"])
        with pytest.raises(ValueError, match="layers.1.weight"):
            set_(model, broken(source, "wrong shape")[0], strict=False)


def test_keras_rejects_unsupported_layers() -> None:
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 3)])
    with pytest.raises(NotImplementedError, match="Embedding.*Dense, Conv2D"):
        entente_keras.get_params(model)

    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    nested = keras.Sequential([keras.Input((3,)), inner])
    with pytest.raises(NotImplementedError, match="itself a model"):
        entente_keras.get_params(nested)

    opaque = keras.Sequential(
        [
            keras.Input((2, 2, 3)),
            keras.layers.Flatten(),
            keras.layers.Lambda(lambda t: t[:, ::-1]),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(NotImplementedError, match="Lambda"):
        entente_keras.get_params(opaque)


def test_keras_rejects_unbuilt_models_and_wrong_names() -> None:
    with pytest.raises(ValueError, match="not built"):
        entente_keras.get_params(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="3 layers with weights"):
        entente_keras.get_params(keras_mlp(), names=["a", "b"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_module_on_cuda_round_trips_through_the_cpu() -> None:
    module = TorchMLP().cuda()
    params = entente_torch.get_params(module)
    assert all(isinstance(v, np.ndarray) for v in params.values())
    new = entente_torch.get_params(TorchMLP())
    entente_torch.set_params(module, new)
    assert all(t.is_cuda for t in module.state_dict().values())
    assert_same_params(entente_torch.get_params(module), new)
