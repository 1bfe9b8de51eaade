"""Several models as one: the mean of their probability maps.

An :class:`Ensemble` is itself a predictor (``segkit.runtimes.Predictor``), so ``segkit
predict --model A --model B`` and ``python run.py task=evaluate model_uri=[A,B]`` predict,
score, threshold and flip-average (TTA) it like a single model. Its members may run on
different runtimes; they must take the same input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segkit.errors import ConfigError
from segkit.formats import format_of
from segkit.runtimes import Predictor, is_mlflow_uri, open_predictor


class Ensemble:
    """The mean of ``members``' probabilities (each predicted on the same batch)."""

    def __init__(self, members: Sequence[Predictor], names: Sequence[str]) -> None:
        check_sizes(members, names)
        self.members = list(members)
        self.names = list(names)
        self.input_size = members[0].input_size
        runtimes = sorted({m.runtime for m in members})
        self.runtime = runtimes[0] if len(runtimes) == 1 else "+".join(runtimes)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total = np.asarray(self.members[0](batch), dtype=np.float32).copy()
        for member in self.members[1:]:
            total += np.asarray(member(batch), dtype=np.float32)
        return total / len(self.members)


def check_sizes(members: Sequence[Predictor], names: Sequence[str]) -> None:
    """ConfigError, one line, unless every member takes the same input size."""
    sizes = {m.input_size for m in members}
    if len(sizes) > 1:
        shown = ", ".join(f"{n} ({m.input_size}x{m.input_size})"
                          for n, m in zip(names, members, strict=True))
        raise ConfigError(f"an ensemble's models must take the same input size: {shown}; "
                          "use models trained at one data.image_size")


def combine(members: Sequence[Predictor], names: Sequence[str]) -> Predictor:
    """The one model itself, or the ensemble of several."""
    if not members:
        raise ConfigError("no model given: give at least one")
    return members[0] if len(members) == 1 else Ensemble(members, names)


def default_runtime(uri: str) -> str:
    """The runtime that reads ``uri`` as it is: ``tf`` for a Keras model (no conversion at
    every start), ``auto`` (the fastest installed that reads it) for an exported file."""
    exported = not is_mlflow_uri(uri) and format_of(Path(uri).expanduser()) is not None
    return "auto" if exported else "tf"


def open_models(uris: Sequence[str], runtime: str | None = None,
                tracking_uri: str | None = None) -> Predictor:
    """One predictor for the models at ``uris`` (an ensemble when several) on ``runtime``
    (None: :func:`default_runtime` of each)."""
    members = [open_predictor(u, runtime or default_runtime(u), tracking_uri) for u in uris]
    return combine(members, list(uris))
