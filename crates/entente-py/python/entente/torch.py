"""PyTorch adapter: ``torch.nn.Module`` <-> entente's named parameter arrays.

entente's canonical layout *is* PyTorch's, so this adapter renames nothing and moves no
axes: ``get_params`` reads ``module.state_dict()`` and ``set_params`` writes it back.
What it does take care of:

* Only floating-point entries are exchanged. Integer buffers, such as BatchNorm's
  ``num_batches_tracked`` counter, are not averaged across sites; each site keeps its own
  and they keep counting locally.
* Values travel as float32 numpy arrays whatever the tensor's dtype (numpy has no
  bfloat16) and device, and are written back in each tensor's own dtype and on its own
  device.
* Arrays are converted with ``torch.from_numpy``, never ``torch.Tensor(array)``, which
  casts silently.

Importing this module imports ``torch``; ``entente`` itself does not.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from entente import _layout

__all__ = ["get_params", "set_params"]


def get_params(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Copy a module's floating-point tensors out as float32 numpy arrays.

    Returns every floating-point entry of ``module.state_dict()``, in state-dict order:
    the parameters and the float buffers (BatchNorm's ``running_mean`` and
    ``running_var``, for example). Each value is a fresh C-contiguous float32 array on the
    CPU, whatever the tensor's dtype (bfloat16 and float16 are widened) and device, so
    later training does not change it.

    Integer buffers, such as BatchNorm's ``num_batches_tracked``, are left out: they are
    not averaged, but stay local to each site and keep counting there.
    """
    params: dict[str, np.ndarray] = {}
    for name, tensor in _float_entries(module).items():
        params[name] = (
            tensor.detach()
            .to(
                device="cpu",
                dtype=torch.float32,
                memory_format=torch.contiguous_format,
                copy=True,
            )
            .numpy()
        )
    return params


def set_params(
    module: torch.nn.Module,
    params: Mapping[str, np.ndarray],
    strict: bool = True,
) -> None:
    """Copy values from ``params`` into the module's tensors, in place.

    Each value is converted to the dtype of the tensor it replaces and copied to that
    tensor's device (through ``module.load_state_dict``, so modules that customise
    loading keep working). Integer buffers, such as BatchNorm's ``num_batches_tracked``,
    are never touched: ``params`` does not carry them (see ``get_params``).

    Everything is checked before anything is written, so a call that raises leaves the
    module unchanged. Raises ``ValueError``, naming each tensor involved:

    * if a value's shape differs from its tensor's (the message gives both shapes) or a
      value is not a floating-point array, whatever ``strict`` says;
    * with ``strict`` (the default), if a floating-point tensor of the module is missing
      from ``params`` or ``params`` names a tensor the module does not have. Without
      ``strict`` the missing tensors keep their values and unknown names are ignored.
    """
    targets = _float_entries(module)
    expected = {name: tuple(tensor.shape) for name, tensor in targets.items()}
    converted = _layout.check_params(expected, params, strict=strict)
    state = {
        # from_numpy warns on read-only arrays; copy those (the values are copied again
        # into the module's tensors, so nothing keeps a reference to the caller's array).
        name: torch.from_numpy(value if value.flags.writeable else value.copy())
        for name, value in converted.items()
    }
    # The check above leaves load_state_dict nothing to complain about: the missing keys
    # are the integer buffers (and, without strict, the skipped tensors).
    module.load_state_dict(state, strict=False)


def _float_entries(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The floating-point tensors of ``module.state_dict()``, by name, in order."""
    return {
        name: value
        for name, value in module.state_dict().items()
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    }
