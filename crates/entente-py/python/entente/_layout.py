"""Framework-free helpers shared by the PyTorch and Keras adapters.

entente's canonical parameter layout is PyTorch's: a ``dict[str, numpy.ndarray]`` of
C-contiguous float32 arrays, named like ``layers.0.weight``, with Linear weights
``[out, in]``, Conv2d kernels OIHW and features flattened in NCHW order. The adapters
convert to and from that layout; this module holds the parts that need only numpy:
dtype conversion, the checks a ``set_params`` runs before it writes anything, and the
row permutation that maps a Keras (NHWC) flatten order to the canonical (NCHW) one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "check_params",
    "is_float_dtype",
    "nhwc_to_nchw_flat_order",
    "to_float32",
]

# How many problems one ValueError lists before it summarises the rest.
_MAX_LISTED = 10


def is_float_dtype(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a real floating-point type entente can convert to float32.

    Besides numpy's own float types this accepts the ``ml_dtypes`` types that frameworks
    hand out (``bfloat16``, the ``float8_*`` family), which numpy files under kind ``V``.
    """
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float8"))


def to_float32(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as a C-contiguous float32 numpy array (a view when it already is one)."""
    return np.ascontiguousarray(np.asarray(array).astype(np.float32, copy=False))


def check_params(
    expected: Mapping[str, tuple[int, ...]],
    params: Mapping[str, np.ndarray],
    *,
    strict: bool,
) -> dict[str, np.ndarray]:
    """Check ``params`` against a model's tensors and convert the values to float32.

    ``expected`` maps each tensor a model would accept to its canonical shape. Every
    problem found is gathered into one ``ValueError`` that names each tensor involved, so
    that a caller can run this before it writes anything and a failed ``set_params``
    leaves the model untouched.

    * A value whose shape differs from the expected one is always an error: copying it is
      impossible, and skipping it would hide a mismatched architecture.
    * A value that is not a real floating-point array is always an error.
    * With ``strict``, a tensor of the model missing from ``params`` and a name in
      ``params`` the model lacks are errors too; without it they are skipped.

    Returns the values that should be written, by name, as C-contiguous float32 arrays.
    """
    problems: list[str] = []
    converted: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in params:
            if strict:
                problems.append(f"missing tensor {name!r} (expected shape {shape})")
            continue
        value = np.asarray(params[name])
        if not is_float_dtype(value.dtype):
            problems.append(
                f"tensor {name!r} has dtype {value.dtype}; expected a floating-point array"
            )
            continue
        if tuple(value.shape) != tuple(shape):
            problems.append(
                f"tensor {name!r} has the wrong shape: expected {shape}, got {tuple(value.shape)}"
            )
            continue
        converted[name] = to_float32(value)
    if strict:
        for name in params:
            if name not in expected:
                shape = tuple(np.shape(params[name]))
                problems.append(
                    f"unknown tensor {name!r} with shape {shape}: the model has no tensor"
                    " of that name"
                )
    if problems:
        listed = problems[:_MAX_LISTED]
        if len(problems) > _MAX_LISTED:
            listed.append(f"... and {len(problems) - _MAX_LISTED} more")
        message = "parameters do not match the model: " + "; ".join(listed)
        raise ValueError(message)
    return converted


def nhwc_to_nchw_flat_order(height: int, width: int, channels: int) -> np.ndarray:
    """Index map from a channels-last flatten order to the channels-first one.

    Flattening an ``(H, W, C)`` feature map (Keras) puts element ``(h, w, c)`` at
    ``(h*W + w)*C + c``; flattening the ``(C, H, W)`` map (PyTorch) puts it at
    ``c*H*W + h*W + w``. The returned ``perm`` (int64, length ``H*W*C``) satisfies
    ``perm[c*H*W + h*W + w] == (h*W + w)*C + c``, so that

    * ``x_nchw_flat == x_nhwc_flat[perm]`` for a flattened feature vector;
    * ``weight == kernel[perm, :].T`` turns the kernel ``[in, out]`` of a Dense layer that
      reads the Keras flatten into the canonical ``[out, in]`` Linear weight, and
      ``kernel == weight.T[np.argsort(perm), :]`` goes back.

    The shapes agree with or without the permutation, so a model copied without it runs
    and silently computes something else; it is the identity only when ``H*W == 1`` or
    ``C == 1``.
    """
    for label, size in (("height", height), ("width", width), ("channels", channels)):
        if size < 1:
            raise ValueError(f"{label} must be positive, got {size}")
    nhwc_index = np.arange(height * width * channels, dtype=np.int64).reshape(
        height, width, channels
    )
    return np.ascontiguousarray(nhwc_index.transpose(2, 0, 1).reshape(-1))
