"""One line for each way Hydra or OmegaConf can refuse a config before segkit sees it: a
misspelled key, an unknown group option, a YAML syntax error, an override that does not
parse. ``run.py`` prints the line as ``error: ...`` and exits 2, before TensorFlow is
imported and before any MLflow run exists.

Hydra's own messages span several lines (options, the search path, a hint to set
HYDRA_FULL_ERROR); these name the key or the file, line and column, and the fix.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable
from pathlib import Path

import yaml
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

CONFIG_ERRORS = (HydraException, OmegaConfBaseException, yaml.YAMLError)


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _unknown_key(exc: ConfigCompositionException) -> str | None:
    """``model.filter=32``: Hydra could not override a key that does not exist."""
    cause = exc.__cause__
    if not isinstance(cause, OmegaConfBaseException) or not getattr(cause, "full_key", None):
        return None
    key = str(cause.full_key)
    parent = getattr(cause, "parent_node", None)
    options = [str(k) for k in parent if k != "hydra"] if isinstance(parent, DictConfig) else []
    last = key.rsplit(".", 1)[-1]
    listed = f": keys there are {', '.join(options)}" if options else ""
    return f"{key} is not a config key{_did_you_mean(last, options)}{listed}"


def _missing_option(exc: MissingConfigException) -> str:
    """``loss=focalish``: no such file in the config group."""
    missing = exc.missing_cfg_file or ""
    group, _, name = missing.rpartition("/")
    options = list(exc.options or [])
    if not group or not options:
        return _first_line(exc)
    return (f"{group}={name} is not an option{_did_you_mean(name, options)}: use one of "
            f"{', '.join(options)} (conf/{group}/*.yaml)")


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or _first_line(exc)
    if mark is None:
        return f"a YAML file does not parse: {problem}"
    name = Path(mark.name)
    with contextlib.suppress(ValueError):  # a file outside the working folder: as it is
        name = name.relative_to(Path.cwd())
    return (f"{name}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}; fix the "
            "file")


def one_line(exc: BaseException) -> str:
    """The one-line message for a config error raised while Hydra composes the config."""
    if isinstance(exc, yaml.YAMLError):
        return _yaml_error(exc)
    if isinstance(exc, MissingConfigException):
        return _missing_option(exc)
    if isinstance(exc, OverrideParseException):
        return (f"a command-line override does not parse ({_first_line(exc)}): quote values "
                "with special characters, e.g. 'key=${...}'")
    if isinstance(exc, ConfigCompositionException):
        text = str(exc)
        if "Ambiguous value for argument" in text:
            arg = text.split("'")[1] if "'" in text else "the override"
            return (f"{arg} has several values: add -m to sweep over them, or write "
                    "key=[a,b] for a list")
        return _unknown_key(exc) or _first_line(exc)
    if isinstance(exc, OmegaConfBaseException):  # e.g. an unresolvable ${...}
        key = getattr(exc, "full_key", None) or next(
            (line.split(":", 1)[1].strip() for line in str(exc).splitlines()
             if line.strip().startswith("full_key:")), None)
        reason = _first_line(exc).replace("KeyError raised while resolving interpolation: ", "")
        reason = reason.strip('"')
        return f"{key}: {reason}" if key else reason
    return _first_line(exc)
