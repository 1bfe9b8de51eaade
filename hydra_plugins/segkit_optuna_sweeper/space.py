"""The search space from overrides, in hydra-optuna-sweeper's syntax: ``choice(a,b)``
(categorical), ``range(start,stop[,step])`` (integers or a float grid, stop excluded, as
Hydra's range), ``interval(low,high)`` (uniform floats; ``int(interval(low,high))``
for integers), the ``log`` tag (``tag(log, interval(...))``), and plain values (fixed
for every trial)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from segkit.errors import ConfigError


def _values(override: Override) -> list[Any]:
    return list(override.sweep_iterator(transformer=Transformer.encode))


def _range(override: Override, value: RangeSweep) -> BaseDistribution:
    values = _values(override)
    if not values:
        raise ConfigError(f"hydra.sweeper.params: {override.input_line} is empty")
    if value.shuffle:
        return CategoricalDistribution(values)
    if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
        return IntDistribution(int(values[0]), int(values[-1]), step=int(value.step or 1))
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step or 1))


def _interval(value: IntervalSweep) -> BaseDistribution:
    log = "log" in value.tags
    assert value.start is not None and value.end is not None
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def distribution(override: Override) -> BaseDistribution | str:
    """Optuna's distribution of a swept override, or the value text of a fixed one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(_values(override))
    if isinstance(value, RangeSweep):
        return _range(override, value)
    if isinstance(value, IntervalSweep):
        return _interval(value)
    raise ConfigError(f"hydra.sweeper.params: {override.input_line} is not a choice, range "
                      "or interval")


def parse_space(lines: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(search space, fixed values) of ``key=value`` lines; a later line replaces an
    earlier one of the same key (the command line wins over hydra.sweeper.params)."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        found = distribution(override)
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(found, BaseDistribution):
            space[key] = found
        else:
            fixed[key] = found
    return space, fixed


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each parameter, for the grid sampler (continuous ones refused)."""
    values: dict[str, list[Any]] = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            values[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            values[key] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise ConfigError(f"hydra.sweeper.sampler.name=grid: {key} is continuous; give "
                              "it as choice(...) or range(...)")
    return values


def n_grid(space: dict[str, BaseDistribution]) -> int:
    total = 1
    for values in grid(space).values():
        total *= len(values)
    return total
