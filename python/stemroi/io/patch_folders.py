"""Labelled patch folders (one image file per patch, class in the file name or the subfolder name)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..io._readers import SUPPORTED_SUFFIXES, _read_image_full, _warn_user, scale_to_unit

__all__ = ["PatchDataset", "load_patch_folder", "class_from_filename"]


@dataclass
class PatchDataset:
    """Patches ``(n, h, w)`` float32 in [0, 1], integer labels and their names."""

    patches: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    files: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def class_counts(self) -> Dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}


def class_from_filename(name: str) -> str:
    """Class of a patch file: the stem's prefix before the last underscore.

    ``Twin_Bound_12.tif`` -> ``Twin_Bound``, ``Vacancy_CdTe_3.tif`` -> ``Vacancy_CdTe``.
    """
    stem = Path(name).stem
    if "_" not in stem:
        raise ValueError(f"{name}: file name has no '_<index>' suffix, so its class cannot be read from it")
    prefix = stem.rsplit("_", 1)[0]
    if not prefix:
        raise ValueError(f"{name}: empty class prefix before the last underscore")
    return prefix


def _natural_key(path: Path):
    stem = path.stem
    prefix, _, index = stem.rpartition("_")
    return (prefix, int(index) if index.isdigit() else float("inf"), path.name)


def _image_files(folders) -> List[Path]:
    """The files of a readable image type in ``folders`` (not recursive), in natural order per folder."""
    return [p for d in folders for p in sorted(d.iterdir(), key=_natural_key)
            if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES]


def _first_names(paths: List[Path]) -> str:
    return ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def _warn_unread_images(files: List[Path], pattern: str) -> None:
    """Warn about image files beside the ones read that ``pattern`` left out (a .png or .tiff among .tif
    files), so that no patch is dropped without a word."""
    read = set(files)
    unread = [p for p in _image_files(sorted({f.parent for f in files})) if p not in read]
    if unread:
        _warn_user(f"{len(unread)} image file(s) beside the {len(files)} read do not match pattern {pattern!r} and "
                   f"were not read ({_first_names(unread)}); to read them too, pass a pattern that matches them "
                   "(command line: --pattern)")


def load_patch_folder(path, pattern: str = "*.tif") -> PatchDataset:
    """Read every file matching ``pattern`` in ``path`` as a labelled patch.

    Two layouts: the files in ``path`` itself, each named ``<class>_<n>``
    (the CdTe / SrTiO3 sets), or, when ``path`` holds no matching file, one
    subfolder per class (``path/<class>/<any name>``, the layout of
    torchvision's ``ImageFolder`` and Keras' ``image_dataset_from_directory``).
    Classes are sorted by name; files are ordered by class, then by the numeric
    index after the last underscore (deterministic). Colour files (RGB/RGBA with
    equal channels) give their exact grey values. Integer files are scaled by
    their dtype range (uint8 / 255), float files must already lie in [0, 1].
    A UserWarning names the image files beside them that ``pattern`` leaves out.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of patch images")
    files = sorted((p for p in folder.glob(pattern) if p.is_file()), key=_natural_key)
    if files:
        names = [class_from_filename(f.name) for f in files]
    else:
        by_class = {d.name: sorted((p for p in d.glob(pattern) if p.is_file()), key=_natural_key)
                    for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
        by_class = {c: fs for c, fs in by_class.items() if fs}
        if not by_class:
            images = _image_files([folder] + sorted(q for q in folder.iterdir() if q.is_dir()))
            hint = "" if not images else (f"; it holds {len(images)} image file(s) of other names "
                                          f"({_first_names(images)}): pass a pattern that matches them, "
                                          f"e.g. '*{images[0].suffix}'")
            raise ValueError(f"{folder}: no files match pattern {pattern!r}, neither in the folder (named "
                             f"<class>_<n>) nor in class subfolders (<class>/<file>){hint}")
        files = [f for fs in by_class.values() for f in fs]
        names = [c for c, fs in by_class.items() for _ in fs]
    _warn_unread_images(files, pattern)
    class_names = sorted(set(names))
    index = {c: i for i, c in enumerate(class_names)}
    patches = []
    shape = None
    for f in files:
        image, _, stored = _read_image_full(f)
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise ValueError(f"{f}: patch of shape {image.shape}, but {files[0].name} has shape {shape}")
        patches.append(scale_to_unit(image, "dtype", source_dtype=stored))
    labels = np.array([index[n] for n in names], dtype=np.int64)
    return PatchDataset(np.stack(patches).astype(np.float32, copy=False), labels, class_names, [str(f) for f in files])
