"""Keras adapter: ``keras.Model`` <-> entente's named parameter arrays.

entente's canonical layout is PyTorch's, so a Keras model's weights are renamed and
rearranged on the way out and back:

======================  =========================  =================================
Keras layer             Keras weight               canonical tensor
======================  =========================  =================================
``Dense``               ``kernel`` ``[in, out]``   ``{p}.weight`` ``[out, in]``
                        ``bias``                   ``{p}.bias``
``Conv2D``              ``kernel`` HWIO            ``{p}.weight`` OIHW
                        ``bias``                   ``{p}.bias``
``BatchNormalization``  ``gamma`` / ``beta``       ``{p}.weight`` / ``{p}.bias``
                        ``moving_mean``            ``{p}.running_mean``
                        ``moving_variance``        ``{p}.running_var``
======================  =========================  =================================

The prefix ``{p}`` of the k-th layer that has weights (counting from 0, in
``model.layers`` order) is ``names[k]`` when ``names`` is given, else ``layers.{k}``, which
is what a PyTorch module holding its layers in ``self.layers = nn.ModuleList(...)`` uses.
Layers without weights (pooling, dropout, activations, ``Flatten``...) are passed over.

A ``Flatten`` (or a ``Reshape`` to one dimension) of an ``(H, W, C)`` feature map orders
its outputs ``(h, w, c)``; PyTorch flattens ``(C, H, W)`` maps as ``(c, h, w)``. The
kernel rows of the ``Dense`` layer that reads those features (directly, or through
dropout, activation and ``BatchNormalization`` layers, whose vectors are permuted too)
are permuted accordingly, with ``H``, ``W`` and ``C`` read from the ``Flatten`` layer's
actual input shape. Without this the shapes would match and the copied model would
silently compute something else. Which layer reads which tensor is taken from the
model's graph, so a Sequential or functional model is needed when there is a
``Flatten``; a layer entente cannot see through between the ``Flatten`` and the
``Dense`` raises ``NotImplementedError``.

Weights leave as float32 whatever the layer's dtype (``float16`` and ``bfloat16``
included) and are written back in each variable's own dtype. Only Keras 3 models are
supported, with their layers at the top level of the model.

Importing this module imports ``keras``; ``entente`` itself does not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from entente import _layout

__all__ = ["get_params", "set_params"]

# The layer types that have weights entente can map, for error messages.
_SUPPORTED = "Dense, Conv2D (channels_last) and BatchNormalization"

# Weightless layers that leave the order of a flattened feature vector as it is (each is
# elementwise, or treats all features alike), so features flattened from an (H, W, C)
# map keep their order through them. Names missing from the installed Keras are skipped.
_ORDER_PRESERVING = tuple(
    layer_type
    for layer_type in (
        getattr(keras.layers, name, None)
        for name in (
            "Activation",
            "ActivityRegularization",
            "AlphaDropout",
            "Dropout",
            "ELU",
            "GaussianDropout",
            "GaussianNoise",
            "Identity",
            "LeakyReLU",
            "ReLU",
            "Softmax",
        )
    )
    if isinstance(layer_type, type)
)

# Kernel layouts of the other convolutions, which Conv2D's mapping must not be applied to.
_OTHER_CONVOLUTIONS = tuple(
    layer_type
    for layer_type in (
        getattr(keras.layers, name, None)
        for name in ("Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D")
    )
    if isinstance(layer_type, type)
)


def get_params(
    model: keras.Model,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Copy a built Keras model's weights out in entente's canonical layout.

    Returns a fresh C-contiguous float32 array for each weight, named and arranged as the
    module documentation describes, in layer order (and, within a layer, in the order
    PyTorch's state dict uses: weight, bias, running_mean, running_var).

    ``names``, if given, holds one prefix for each layer that has weights, in order.
    Raises ``ValueError`` if the model is not built or ``names`` has the wrong length,
    ``NotImplementedError`` for a layer with weights of an unsupported type or a nested
    model.
    """
    return {slot.name: slot.read() for slot in _slots(model, names)}


def set_params(
    model: keras.Model,
    params: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    strict: bool = True,
) -> None:
    """Copy canonical-layout values from ``params`` into a built Keras model's weights.

    The inverse of ``get_params`` (with the same ``names``): each value is rearranged into
    the Keras layout and assigned in the variable's own dtype.

    Everything is checked before anything is written, so a call that raises leaves the
    model unchanged. Raises ``ValueError``, naming each tensor involved:

    * if a value's shape differs from the canonical shape of its tensor (the message gives
      both shapes) or a value is not a floating-point array, whatever ``strict`` says;
    * with ``strict`` (the default), if a tensor of the model is missing from ``params``
      or ``params`` names a tensor the model does not have. Without ``strict`` the missing
      tensors keep their values and unknown names are ignored.

    Raises as ``get_params`` does for models it cannot map.
    """
    slots = _slots(model, names)
    expected = {slot.name: slot.shape for slot in slots}
    converted = _layout.check_params(expected, params, strict=strict)
    for slot in slots:
        if slot.name in converted:
            slot.write(converted[slot.name])


@dataclass(frozen=True)
class _Slot:
    """One canonical tensor and the Keras variable that holds it.

    ``to_canonical`` and ``from_canonical`` rearrange between the variable's layout and
    the canonical one; ``shape`` is the canonical shape.
    """

    name: str
    variable: keras.Variable
    shape: tuple[int, ...]
    to_canonical: Callable[[np.ndarray], np.ndarray]
    from_canonical: Callable[[np.ndarray], np.ndarray]

    def read(self) -> np.ndarray:
        """The variable's value, in the canonical layout, as a fresh float32 array."""
        # Cast in the backend first: it is lossless for float16 and bfloat16, and with
        # TensorFlow, numpy 2 warns when it converts a variable or a non-float32 tensor
        # (their __array__ takes no `copy` argument).
        value = keras.ops.convert_to_numpy(keras.ops.cast(self.variable, "float32"))
        return np.array(self.to_canonical(value), dtype=np.float32, order="C", copy=True)

    def write(self, value: np.ndarray) -> None:
        """Assign a canonical-layout float32 value, cast to the variable's dtype."""
        keras_value = np.ascontiguousarray(self.from_canonical(value))
        self.variable.assign(keras.ops.cast(keras_value, self.variable.dtype))


def _identity(value: np.ndarray) -> np.ndarray:
    return value


def _slots(model: keras.Model, names: Sequence[str] | None) -> list[_Slot]:
    """Map every weight of ``model`` to its canonical name, shape and layout."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"expected a Keras 3 keras.Model, got {type(model).__module__}.{type(model).__name__}"
            " (Keras 2 / tf_keras models are not supported)"
        )
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built, so it has no weights yet: give it an"
            " Input, call model.build(input_shape), or call it on a batch first"
        )
    weighted = [layer for layer in model.layers if layer.weights]
    if names is not None:
        names = list(names)
        if len(names) != len(weighted):
            raise ValueError(
                f"got {len(names)} names for the {len(weighted)} layers with weights of model"
                f" {model.name!r}: {[layer.name for layer in weighted]}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"names must be distinct, got {names}")

    slots: list[_Slot] = []
    # Tensors of the model graph that hold features flattened from an (H, W, C) map, by
    # id(), each with the permutation from its order to PyTorch's.
    flattened: dict[int, np.ndarray] = {}
    k = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise NotImplementedError(
                f"layer {layer.name!r} of model {model.name!r} is itself a model"
                f" ({type(layer).__name__}); only top-level layers are supported, so"
                " rebuild the model with the nested model's layers inlined"
            )
        perm = _flatten_order_of_input(layer, flattened)
        if not layer.weights:
            out_perm = _flatten_order_after(layer, perm)
            if out_perm is not None:
                flattened[id(layer.output)] = out_perm
            continue
        prefix = names[k] if names is not None else f"layers.{k}"
        k += 1
        if isinstance(layer, keras.layers.Dense):
            slots += _dense_slots(layer, prefix, perm)
        elif isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, _OTHER_CONVOLUTIONS):
            slots += _conv2d_slots(layer, prefix)
        elif isinstance(layer, keras.layers.BatchNormalization):
            # On flattened features, the vectors are in the flatten order too, and so is
            # the output, for the Dense that follows.
            slots += _batch_norm_slots(layer, prefix, perm)
            if perm is not None:
                flattened[id(layer.output)] = perm
        else:
            raise NotImplementedError(
                f"layer {layer.name!r} of type {type(layer).__name__} has weights, but"
                f" entente maps only {_SUPPORTED} layers"
            )
    return slots


def _flatten_order_of_input(
    layer: keras.layers.Layer, flattened: Mapping[int, np.ndarray]
) -> np.ndarray | None:
    """The flatten permutation of the features ``layer`` reads, if they are flattened."""
    if not flattened:
        return None
    inputs = layer.input
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    perms = [flattened[id(tensor)] for tensor in inputs if id(tensor) in flattened]
    if not perms:
        return None
    if len(inputs) != 1:
        raise NotImplementedError(
            f"layer {layer.name!r} of type {type(layer).__name__} combines several inputs,"
            " one of them features flattened from an (H, W, C) map; entente cannot tell"
            " how their order maps to PyTorch's"
        )
    return perms[0]


def _flatten_order_after(layer: keras.layers.Layer, perm: np.ndarray | None) -> np.ndarray | None:
    """The flatten permutation of the weightless ``layer``'s output.

    ``perm`` is that of its input (``None`` when the input is not flattened features).
    """
    flattens = isinstance(layer, keras.layers.Flatten) or (
        isinstance(layer, keras.layers.Reshape) and len(layer.target_shape) == 1
    )
    if flattens:
        shape = _input_shape(layer)
        if len(shape) <= 2:
            # Already flat: nothing moves.
            return perm
        if len(shape) == 3:
            # (batch, steps, features), e.g. after a Dense applied along a sequence:
            # PyTorch flattens it in the same order, there is no channel axis to move.
            return None
        if len(shape) != 4:
            raise NotImplementedError(
                f"layer {layer.name!r} flattens a rank-{len(shape)} input {shape}; only"
                " (batch, H, W, C) feature maps are supported"
            )
        if isinstance(layer, keras.layers.Flatten) and layer.data_format != "channels_last":
            raise NotImplementedError(
                f"Flatten layer {layer.name!r} has data_format={layer.data_format!r};"
                " only channels_last is supported"
            )
        _, height, width, channels = shape
        if None in (height, width, channels):
            raise ValueError(
                f"layer {layer.name!r} flattens an input of shape {shape}; its height,"
                " width and channels must be known to reorder the next Dense layer's rows"
            )
        return _layout.nhwc_to_nchw_flat_order(height, width, channels)
    if perm is None or isinstance(layer, _ORDER_PRESERVING):
        return perm
    raise NotImplementedError(
        f"layer {layer.name!r} of type {type(layer).__name__} reads features flattened"
        " from an (H, W, C) map before a Dense layer does; entente cannot tell how it"
        " reorders them"
    )


def _input_shape(layer: keras.layers.Layer) -> tuple[int | None, ...]:
    """The shape of the tensor ``layer`` was first called on, batch axis included."""
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"cannot tell the input shape of layer {layer.name!r}; entente needs it to"
            " reorder the next Dense layer's rows (build the model as Sequential or"
            " functional, with an Input or model.build(input_shape))"
        ) from error


def _expect_weights(layer: keras.layers.Layer, variables: list[keras.Variable]) -> None:
    """Fail unless ``variables`` are all of ``layer``'s weights, e.g. LoRA or quantized."""
    if sorted(id(v) for v in variables) != sorted(id(w) for w in layer.weights):
        raise NotImplementedError(
            f"{type(layer).__name__} layer {layer.name!r} has weights"
            f" {[w.path for w in layer.weights]} where entente expects"
            f" {[getattr(v, 'path', type(v).__name__) for v in variables]}"
            " (LoRA and quantized layers are not supported)"
        )


def _dense_slots(layer: keras.layers.Dense, prefix: str, perm: np.ndarray | None) -> list[_Slot]:
    kernel = layer.kernel
    bias = layer.bias
    variables = [kernel] if bias is None else [kernel, bias]
    _expect_weights(layer, variables)
    fan_in, fan_out = (int(size) for size in kernel.shape)
    if perm is None:

        def to_canonical(value: np.ndarray) -> np.ndarray:
            return value.T

        def from_canonical(value: np.ndarray) -> np.ndarray:
            return value.T

    else:
        if perm.size != fan_in:
            raise ValueError(
                f"Dense layer {layer.name!r} has {fan_in} inputs but follows a Flatten of"
                f" {perm.size} features"
            )
        inverse = np.argsort(perm)

        def to_canonical(value: np.ndarray) -> np.ndarray:
            return value[perm, :].T

        def from_canonical(value: np.ndarray) -> np.ndarray:
            return value.T[inverse, :]

    slots = [_Slot(f"{prefix}.weight", kernel, (fan_out, fan_in), to_canonical, from_canonical)]
    if bias is not None:
        slots.append(_Slot(f"{prefix}.bias", bias, (fan_out,), _identity, _identity))
    return slots


def _conv2d_slots(layer: keras.layers.Conv2D, prefix: str) -> list[_Slot]:
    if layer.data_format != "channels_last":
        raise NotImplementedError(
            f"Conv2D layer {layer.name!r} has data_format={layer.data_format!r}; only"
            " channels_last is supported"
        )
    kernel = layer.kernel
    bias = layer.bias
    variables = [kernel] if bias is None else [kernel, bias]
    _expect_weights(layer, variables)
    height, width, fan_in, fan_out = (int(size) for size in kernel.shape)

    def to_canonical(value: np.ndarray) -> np.ndarray:
        return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW

    def from_canonical(value: np.ndarray) -> np.ndarray:
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO

    slots = [
        _Slot(
            f"{prefix}.weight",
            kernel,
            (fan_out, fan_in, height, width),
            to_canonical,
            from_canonical,
        )
    ]
    if bias is not None:
        slots.append(_Slot(f"{prefix}.bias", bias, (fan_out,), _identity, _identity))
    return slots


def _batch_norm_slots(
    layer: keras.layers.BatchNormalization, prefix: str, perm: np.ndarray | None
) -> list[_Slot]:
    pairs = [
        ("weight", layer.gamma),
        ("bias", layer.beta),
        ("running_mean", layer.moving_mean),
        ("running_var", layer.moving_variance),
    ]
    pairs = [(suffix, variable) for suffix, variable in pairs if variable is not None]
    _expect_weights(layer, [variable for _, variable in pairs])
    to_canonical = from_canonical = _identity
    if perm is not None:
        (size,) = (int(n) for n in layer.moving_mean.shape)
        if perm.size != size:
            raise ValueError(
                f"BatchNormalization layer {layer.name!r} normalises {size} features but"
                f" follows a Flatten of {perm.size} features"
            )
        inverse = np.argsort(perm)

        def to_canonical(value: np.ndarray) -> np.ndarray:
            return value[perm]

        def from_canonical(value: np.ndarray) -> np.ndarray:
            return value[inverse]

    return [
        _Slot(
            f"{prefix}.{suffix}",
            variable,
            tuple(int(n) for n in variable.shape),
            to_canonical,
            from_canonical,
        )
        for suffix, variable in pairs
    ]
