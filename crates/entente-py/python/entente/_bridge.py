"""What entente's Rust half calls: converts the model between bytes and numpy arrays, calls
the site's client, and checks what it returns before anything leaves the site.

An :class:`entente.Client` gets and returns ``dict[str, numpy.ndarray]``. Any other object
with Flower's ``NumPyClient`` methods gets and returns lists of arrays, ordered as the
initial model's tensors, so a Flower client joins unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from entente._client import Client, Config

_FLOAT_KINDS = "f"


class InvalidReturn(ValueError):
    """What a client returned is refused before anything leaves the site (a missing or unknown
    tensor, a wrong shape or dtype, a NaN); the message names the tensor."""


def _arrays(
    names: Sequence[str], shapes: Sequence[Sequence[int]], blobs: Sequence[bytes]
) -> dict[str, np.ndarray]:
    """The model as writable float32 arrays."""
    return {
        name: np.frombuffer(blob, dtype="<f4").reshape(tuple(shape)).copy()
        for name, shape, blob in zip(names, shapes, blobs, strict=False)
    }


def _as_array(name: str, value: Any) -> np.ndarray:
    """One returned tensor as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in _FLOAT_KINDS and array.dtype.name != "bfloat16":
        raise InvalidReturn(
            f"tensor `{name}` has dtype {array.dtype}; return floating-point values "
            "(float16, bfloat16, float32 or float64)"
        )
    return array


def _encode(
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    returned: Any,
    method: str,
) -> list[bytes]:
    """Checks a returned model against the task's layout and encodes it as f32 bytes."""
    if isinstance(returned, Mapping):
        given = set(returned)
        missing = [n for n in names if n not in given]
        if missing:
            raise InvalidReturn(
                f"{method} returned no tensor `{missing[0]}` (missing: {', '.join(missing)})"
            )
        unknown = sorted(given.difference(names))
        if unknown:
            raise InvalidReturn(
                f"{method} returned tensor `{unknown[0]}`, which the model does not have "
                f"(its tensors: {', '.join(names)})"
            )
        values = [returned[n] for n in names]
    elif isinstance(returned, (list, tuple)):
        if len(returned) != len(names):
            raise InvalidReturn(
                f"{method} returned {len(returned)} arrays; the model has {len(names)} tensors "
                f"({', '.join(names)}), in that order"
            )
        values = list(returned)
    else:
        raise InvalidReturn(
            f"{method} must return the parameters as a dict of arrays (entente.Client) or a "
            f"list of arrays (Flower NumPyClient), not {type(returned).__name__}"
        )
    blobs = []
    for name, shape, value in zip(names, shapes, values, strict=False):
        array = _as_array(name, value)
        if tuple(array.shape) != tuple(shape):
            raise InvalidReturn(
                f"tensor `{name}` has shape {list(array.shape)}; the model's is {list(shape)}"
            )
        as_f32 = np.ascontiguousarray(array, dtype="<f4")
        if not np.isfinite(as_f32).all():
            raise InvalidReturn(f"tensor `{name}` holds a NaN or infinite value; nothing was sent")
        blobs.append(as_f32.tobytes())
    return blobs


#: Most examples a site may claim (entente's bound on every claim, 2**40).
MAX_EXAMPLES = 1 << 40


def _count(value: Any, method: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not 0 <= value <= MAX_EXAMPLES
    ):
        raise InvalidReturn(
            f"{method} must return num_examples as an int from 0 to {MAX_EXAMPLES}, not {value!r}"
        )
    return int(value)


def _number(metrics: Any, keys: Sequence[str], default: float) -> float:
    if not isinstance(metrics, Mapping):
        return default
    for key in keys:
        if key in metrics:
            try:
                value = float(metrics[key])
            except (TypeError, ValueError):
                return default
            return value if math.isfinite(value) else default
    return default


def _remote(client: Any) -> bool:
    """A stand-in for a client in a worker process (``simulate(processes=N)``)."""
    from entente._pool import RemoteClient

    return isinstance(client, RemoteClient)


def _dict_api(client: Any) -> bool:
    """entente's own Client takes dicts; anything else is treated as a Flower NumPyClient."""
    return isinstance(client, Client)


def _call_params(client: Any, names: Sequence[str], params: dict[str, np.ndarray]) -> Any:
    return params if _dict_api(client) else [params[n] for n in names]


def _call(
    client: Any,
    method: str,
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    blobs: Sequence[bytes],
    config: Config,
) -> tuple[Any, Any, Any]:
    """Runs ``client.<method>`` on the model and returns its three results, unchecked."""
    params = _arrays(names, shapes, blobs)
    result = getattr(client, method)(_call_params(client, names, params), dict(config))
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        first = "parameters" if method == "fit" else "loss"
        raise InvalidReturn(f"{method} must return ({first}, num_examples, metrics)")
    return result[0], result[1], result[2]


def fit(
    client: Any,
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    blobs: Sequence[bytes],
    config: Config,
) -> tuple[list[bytes], int, float]:
    """Runs ``client.fit`` on the global model; returns the checked model, examples, loss."""
    if _remote(client):
        return client.call("fit", (names, shapes, blobs, config))
    returned, num_examples, metrics = _call(client, "fit", names, shapes, blobs, config)
    encoded = _encode(names, shapes, returned, "fit")
    count = _count(num_examples, "fit")
    return encoded, count, _number(metrics, ("loss", "train_loss"), 0.0)


def evaluate(
    client: Any,
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    blobs: Sequence[bytes],
    config: Config,
) -> tuple[float, int, float]:
    """Runs ``client.evaluate``; returns the loss, examples and accuracy (NaN if not given)."""
    if _remote(client):
        return client.call("evaluate", (names, shapes, blobs, config))
    loss, num_examples, metrics = _call(client, "evaluate", names, shapes, blobs, config)
    try:
        loss = float(loss)
    except (TypeError, ValueError) as e:
        raise InvalidReturn(f"evaluate must return the loss as a number, not {loss!r}") from e
    return loss, _count(num_examples, "evaluate"), _number(metrics, ("accuracy",), math.nan)
