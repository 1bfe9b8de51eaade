"""Hydra ``_target_`` instantiation restricted to classes segkit allows.

A config is data, but ``hydra.utils.instantiate`` imports and calls whatever ``_target_``
names (``os.system`` included). segkit instantiates only classes under the allowed prefixes,
and ``check_targets`` refuses any other ``_target_`` anywhere in the config before any work.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from segkit.errors import SegkitError

# Keras callbacks (CSVLogger, TerminateOnNaN, ...) and segkit's own classes.
ALLOWED_PREFIXES = ("keras.callbacks.", "segkit.")


class TargetError(SegkitError):
    """A ``_target_`` outside the allowlist, or one that is not a class."""


def _targets(node, path: str) -> Iterator[tuple[str, object]]:
    if isinstance(node, DictConfig):
        for key in node:
            child = f"{path}.{key!s}" if path else str(key)
            value = node.get(key)
            if key == "_target_":
                yield child, value
            else:
                yield from _targets(value, child)
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def check_target(target: object, key: str) -> None:
    """Raise TargetError unless ``target`` names a class under ALLOWED_PREFIXES."""
    allowed = ", ".join(p + "*" for p in ALLOWED_PREFIXES)
    if not isinstance(target, str) or not target.startswith(ALLOWED_PREFIXES):
        raise TargetError(f"{key}={target!r} is not allowed: segkit instantiates only "
                          f"{allowed}")
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise TargetError(f"{key}={target!r} cannot be imported: check the spelling "
                          f"({type(exc).__name__})") from None
    if not inspect.isclass(obj):
        raise TargetError(f"{key}={target!r} is not a class: only classes under {allowed} "
                          "can be instantiated")


def check_targets(cfg: DictConfig) -> None:
    """Refuse every ``_target_`` in ``cfg`` that is not an allowed class (no imports of
    anything outside the allowlist happen: the prefix is checked first)."""
    for key, target in _targets(cfg, ""):
        check_target(target, key)


def instantiate_all(nodes, key: str) -> list:
    """Instantiate each ``{_target_: ..., **kwargs}`` of a list after checking its target."""
    from hydra.utils import instantiate

    objects = []
    for i, node in enumerate(nodes):
        name = f"{key}[{i}]._target_"
        target = node.get("_target_") if hasattr(node, "get") else None
        check_target(target, name)
        try:
            objects.append(instantiate(OmegaConf.create(OmegaConf.to_container(node))))
        except Exception as exc:  # bad keyword arguments surface as Hydra errors
            raise TargetError(f"{key}[{i}] ({target}) could not be created: "
                              f"{str(exc).splitlines()[0]}") from None
    return objects
