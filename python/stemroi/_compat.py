"""The 0.1 import paths, kept until stemroi 0.3.

stemroi 0.1 had flat modules (``stemroi.anomaly``, ``stemroi.grouping``,
...). Importing one of those modules still works: it gives a module holding
the names of the new location(s) and warns with a ``FutureWarning`` (shown to
users by default, unlike ``DeprecationWarning``) that names the new path.
The same holds for the top-level names that left the curated API.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Dict, Tuple

REMOVAL = "0.3"

# old module -> new modules whose names it offers (first match wins)
MOVED_MODULES: Dict[str, Tuple[str, ...]] = {
    "anomaly": ("models.cvae", "detection", "plotting"),
    "calibration": ("models.calibration",),
    "classifier": ("models.classifier",),
    "clustering": ("cluster._patch_clusterer", "metrics"),
    "cvae_features": ("features.cvae_residual", "io.patch_folders"),
    "datasets": ("io.patch_folders",),
    "descriptors": ("features.descriptors",),
    "filters": ("preprocessing.filters",),
    "grouping": ("model_selection._overlap",),
    "mobilenet": ("models.mobilenet",),
    "model_file": ("io.model_file",),
    "patches": ("preprocessing.grid",),
    "plots": ("plotting._rois", "plotting"),
    "plots_cluster": ("plotting._cluster", "plotting"),
    "preprocess": ("preprocessing.transforms",),
    "roi": ("detection.roi",),
    "segment": ("models.unet", "detection", "plotting"),
    "synth": ("io.synth",),
    "weights": ("models.weights",),
}


def warn_moved(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in stemroi {REMOVAL}; use {new} instead",
        FutureWarning,
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    # the first frame outside importlib and stemroi's shims; warnings.warn does
    # not count importlib's bootstrap frames, so neither does this
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        internal = "importlib" in name and "_bootstrap" in name
        if not internal and "importlib" not in name and name not in _OWN_FILES:
            return level
        if not internal:
            level += 1
        frame = frame.f_back
    return 1


_OWN_FILES = {__file__, __file__.replace("_compat.py", "__init__.py")}


class _MovedModule(types.ModuleType):
    _targets: Tuple[str, ...] = ()

    def __getattr__(self, name: str):
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self):
        names = set()
        for target in self._targets:
            names.update(dir(importlib.import_module(target)))
        return sorted(names)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, package: str):
        self.package = package

    def find_spec(self, fullname, path=None, target=None):
        head, _, leaf = fullname.rpartition(".")
        if head == self.package and leaf in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = _MovedModule(spec.name)
        leaf = spec.name.rpartition(".")[2]
        module._targets = tuple(f"{self.package}.{t}" for t in MOVED_MODULES[leaf])
        return module

    def exec_module(self, module):
        public = []
        for target in module._targets:  # name the public package, not a private module
            head, _, leaf = target.rpartition(".")
            name = head if leaf.startswith("_") else target
            if name not in public:
                public.append(name)
        warn_moved(module.__name__, " / ".join(public))


def install(package: str) -> None:
    if not any(isinstance(f, _MovedModuleFinder) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder(package))
