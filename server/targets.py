"""Loading what `engine-server TARGET ...` names: ``module:attribute`` or ``module`` (its ``registry``)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from .engine import AnyEngine, LocalEngine
from .registry import EngineRegistry

__all__ = ["TargetError", "load_targets"]


class TargetError(Exception):
    """A TARGET that cannot be loaded; the message is one line naming the target and the reason."""


def load_targets(targets: Iterable[str]) -> EngineRegistry:
    """One registry with every engine the targets name; the built-in examples when there are none."""
    targets = list(targets)
    if not targets:
        from .examples import registry

        return registry
    # Like `python -m`, let a target be a module in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    merged = EngineRegistry()
    for target in targets:
        found = _load(target)
        try:
            if isinstance(found, EngineRegistry):
                merged.merge(found)
            else:
                merged.add(found) if isinstance(found, LocalEngine) else merged.register(found.name, found)
        except (ValueError, TypeError) as error:
            raise TargetError(f"target {target!r}: {error}") from None
    if not len(merged):
        raise TargetError(f"the targets {', '.join(targets)} hold no engines")
    return merged


def _load(target: str) -> EngineRegistry | AnyEngine:
    module_name, _, attribute = target.partition(":")
    if not module_name or (":" in target and not attribute) or ":" in attribute:
        raise TargetError(f"target {target!r} must be `module:attribute` or `module`")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise TargetError(f"target {target!r}: cannot import {module_name!r}: {error}") from None
    except Exception as error:
        raise TargetError(
            f"target {target!r}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from None
    name = attribute or "registry"
    found = module
    for part in name.split("."):
        if not hasattr(found, part):
            raise TargetError(f"target {target!r}: module {module_name!r} has no attribute {name!r}")
        found = getattr(found, part)
    if not isinstance(found, EngineRegistry | AnyEngine):
        raise TargetError(f"target {target!r} is a {type(found).__name__}, not an EngineRegistry or an AnyEngine")
    return found
