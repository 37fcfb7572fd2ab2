"""The client a site subclasses: its own training loop behind two methods.

``params`` is always a ``dict[str, numpy.ndarray]`` of float32 arrays in entente's canonical
layout, PyTorch's (names like ``layers.0.weight``, Linear weights ``[out, in]``, Conv kernels
OIHW, NCHW flattening); ``entente.torch`` and ``entente.keras`` map a model to and from it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: A model: tensor name -> float32 array, in the canonical layout.
Params = dict[str, np.ndarray]
#: What a round tells the client: ``round``, ``local_epochs``, ``batch_size``,
#: ``learning_rate``, ``optimizer`` (``"sgd"`` or ``"adam"``), ``momentum``, ``fedprox_mu``
#: and ``seed``, all from the manifest every site agreed to.
Config = dict[str, int | float | str]
#: Numbers a client reports (``loss`` and ``accuracy`` are read by entente; others are kept
#: by the client).
Metrics = Mapping[str, float]


class Client:
    """A site's trainer. Subclass it and implement :meth:`fit` and :meth:`evaluate`.

    The client holds the site's own records; entente never sees them. Only what ``fit``
    returns (the new parameters, the number of examples, the training loss) leaves the site,
    after entente checks it and, under the manifest's rules, clips it, adds noise and masks it
    for secure aggregation.
    """

    def fit(self, params: Params, config: Config) -> tuple[Params, int, Metrics]:
        """Train from the global model ``params``; return the local model, the number of
        training examples (the FedAvg weight) and metrics (``loss``: mean training loss)."""
        raise NotImplementedError(f"{type(self).__name__}.fit")

    def evaluate(self, params: Params, config: Config) -> tuple[float, int, Metrics]:
        """Evaluate ``params`` on the site's own test split; return the loss, the number of
        examples evaluated and metrics (``accuracy`` as a fraction in [0, 1])."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate")
