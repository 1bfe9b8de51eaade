"""One registry per extension point (models, losses, optimizers, schedules, splits,
augmentations): the single list of its options.

An option is registered by decorating its *options* dataclass, whose fields are the keys of
its YAML file (``conf/<group>/<name>.yaml``) and whose ``check`` method holds every rule its
values must meet, written once. The builder is named by import path and imported only when
something is built, so validating a config (``segkit.config.validate``) costs no TensorFlow
import. Adding an option touches its YAML, its options class and its builder, nothing else.

Hand-written rather than ``hydra.utils.instantiate``: a registry also answers "which options
exist" before anything is imported, checks the values with one-line errors naming the key,
and never imports a module a config names (segkit.targets guards ``_target_`` keys).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import OmegaConf

from segkit.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered option: its options dataclass and its builder's import path."""

    name: str
    options: type
    builder: str  # "package.module:function" (or a class), imported on first use

    def build_fn(self) -> Callable[..., Any]:
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a field annotation (int, float, bool, str, Optional, tuple)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, (tuple, list))
    return isinstance(value, annotation) if isinstance(annotation, type) else True


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and len(args) < len(typing.get_args(annotation)):
        return f"{_describe(args[0])} or null"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def from_mapping(cls: type[T], values: Mapping[str, Any], key: str,
                 context: Mapping[str, Any] | None = None) -> T:
    """``cls(**values)`` with one-line ConfigErrors naming ``key.<field>``: an unknown field,
    a missing one, or a value of the wrong type; then ``cls.check(**context)`` if it has one."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown := sorted(set(values) - fields):
        raise ConfigError(f"{key}.{unknown[0]} is not an option here: remove it or use one of "
                          f"{', '.join(sorted(fields))}")
    if missing := sorted(fields - set(values)):
        raise ConfigError(f"{key}.{missing[0]} is missing: set it in conf/ or on the command line")
    for name in sorted(fields):
        if not _type_ok(values[name], hints[name]):
            raise ConfigError(f"{key}.{name}={values[name]!r} must be {_describe(hints[name])}")
    options = cls(**values)
    check = getattr(options, "check", None)
    if check is not None:
        check(**_accepted(check, context or {}))
    return options


def _accepted(fn: Callable[..., Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``context`` that ``fn`` takes as keyword arguments."""
    accepted = inspect.signature(fn).parameters
    return {k: v for k, v in context.items() if k in accepted}


def plain(node: Any) -> dict[str, Any]:
    """A config node (DictConfig or mapping) as a plain dict of plain values, resolved."""
    if OmegaConf.is_config(node):
        return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    return dict(node)


class Registry:
    """The options of one extension point, keyed by the ``name`` of their config node."""

    def __init__(self, key: str):
        self.key = key  # the config group, e.g. "model": errors name "model.name"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, builder: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``name`` with this options dataclass and builder path."""
        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.key}={name} is registered twice")
            self._entries[name] = Entry(name, cls, builder)
            return cls
        return add

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, name: object) -> Entry:
        """The entry for ``name``; ConfigError listing the options when there is none."""
        if name not in self._entries:
            raise ConfigError(f"{self.key}.name={name!r} is unknown: use one of "
                              f"{', '.join(self._entries)}")
        return self._entries[str(name)]

    def options(self, node: Mapping[str, Any], **context: Any) -> Any:
        """The checked options of the config node ``node`` (its ``name`` picks the entry)."""
        values = plain(node)
        entry = self.get(values.pop("name", None))
        return from_mapping(entry.options, values, self.key, context)

    def build(self, node: Mapping[str, Any], **context: Any) -> Any:
        """Check ``node``, then call the builder with the options as keyword arguments.
        ``context`` (e.g. ``image_size``) goes to the check, and to the builder where its
        signature takes it."""
        entry = self.get(plain(node).get("name"))
        options = self.options(node, **context)
        builder = entry.build_fn()
        return builder(**dataclasses.asdict(options), **_accepted(builder, context))
