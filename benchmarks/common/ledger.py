"""Seconds spent in wrapped public functions, by category: MLflow's API, segkit's tracking
helpers and segkit.plots' figures during one experiment."""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# MLflow calls that segkit makes only inside its own timed tracking helpers.
NESTED = frozenset({"mlflow.get_experiment_by_name", "mlflow.create_experiment",
                    "mlflow.set_tracking_uri", "mlflow.keras.log_model"})
MLFLOW_CALLS = ("set_tracking_uri", "get_experiment_by_name", "create_experiment", "start_run",
                "end_run", "log_param", "log_params", "log_metric", "log_metrics", "set_tag",
                "set_tags", "log_dict", "log_text", "log_artifact", "log_artifacts",
                "log_figure", "log_image")
TRACKING_HELPERS = ("setup_experiment", "log_run_context", "log_model")  # segkit.tracking


class Ledger:
    """Seconds spent in wrapped functions, by category; nested calls count once (outermost).

    ``exclusive`` categories (MLflow, plots) share one nesting guard, so a call inside
    another timed call is not counted twice in ``seconds``; other (context) categories are
    timed independently and include whatever they call. ``by_name`` holds every wrapped
    function's own inclusive time (for the breakdown), ``top`` the outermost calls only.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.by_name: dict[str, float] = defaultdict(float)
        self.top: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0
        self._patched: list[tuple[object, str, Callable]] = []

    def _record(self, category: str, name: str, spent: float, outermost: bool,
                exclusive: bool) -> None:
        if outermost:
            self.seconds[category] += spent
            if exclusive:
                self.top[name] += spent
        self.by_name[name] += spent
        self.calls[name] += 1

    def wrap(self, category: str, name: str, fn: Callable, *, exclusive: bool = True):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            outermost = not (exclusive and self._depth)
            self._depth += exclusive
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= exclusive
                self._record(category, name, time.perf_counter() - t, outermost, exclusive)
        return timed

    def patch(self, owner, attr: str, category: str, *, exclusive: bool = True,
              label: str | None = None) -> None:
        """Replace ``owner.attr`` by its timed wrapper (until :meth:`restore`)."""
        if not hasattr(owner, attr):
            return
        original = getattr(owner, attr)
        name = label or f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}"
        self._patched.append((owner, attr, original))
        setattr(owner, attr, self.wrap(category, name, original, exclusive=exclusive))

    def restore(self) -> None:
        """Put every patched function back."""
        while self._patched:
            owner, attr, original = self._patched.pop()
            setattr(owner, attr, original)


@contextmanager
def instrumented(ledger: Ledger) -> Iterator[Ledger]:
    """Time MLflow's public API and segkit.tracking's helpers ("mlflow") and segkit.plots'
    ``plot_*`` figures ("plots") while the body runs; restore them afterwards."""
    import mlflow
    import mlflow.keras

    from segkit import plots, tracking

    for name in MLFLOW_CALLS:
        ledger.patch(mlflow, name, "mlflow")
    ledger.patch(mlflow.keras, "log_model", "mlflow", label="mlflow.keras.log_model")
    ledger.patch(mlflow.ActiveRun, "__exit__", "mlflow", label="mlflow.ActiveRun.__exit__")
    for name in TRACKING_HELPERS:
        ledger.patch(tracking, name, "mlflow", label=f"segkit.tracking.{name}")
    for name in dir(plots):
        if name.startswith("plot_"):
            ledger.patch(plots, name, "plots", label=f"segkit.plots.{name}")
    try:
        yield ledger
    finally:
        ledger.restore()
