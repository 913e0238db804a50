"""Lazy re-exports for package ``__init__`` modules.

A package lists ``name -> submodule`` once; the submodule is imported on
first attribute access. This keeps ``import stemroi`` fast (torch and the
compiled core load only when a name that needs them is used) and lets
subpackages re-export each other's names without import cycles.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Iterable, List, Tuple


def attach(package: str, exports: Dict[str, str], submodules: Iterable[str] = ()) -> Tuple[Callable, Callable, List[str]]:
    """Return ``(__getattr__, __dir__, __all__)`` for ``package``.

    ``exports`` maps a public name to the module (relative to ``package``,
    e.g. ``"._kmeans"``) that defines it; ``submodules`` are names of
    submodules reachable as attributes.
    """
    submodules = frozenset(submodules)
    names = sorted(exports)

    def __getattr__(name: str):
        module = importlib.import_module(package)
        if name in submodules:
            value = importlib.import_module(f".{name}", package)
        elif name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> List[str]:
        return sorted(set(names) | submodules)

    return __getattr__, __dir__, names
