"""Pretrained weights for the backbones: the one registry of known files, a
cache, safe loaders, and the project's own file for trained backbones.

Known files (``REGISTRY``; each :class:`WeightsSpec` names its architecture and
the input the weights expect: normalisation preset and input size):

``"imagenet"``
    VGG16, torchvision's ``vgg16-397923af.pth`` (the SHA-256 of the file starts
    with the 8 hex digits in its name). Expects ``"torchvision"``
    preprocessing: RGB on [0, 1], ImageNet mean/std, 224 px.
``"imagenet-keras"``
    VGG16, Keras' ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``
    (58,889,256 bytes), the weights of the VGG16 study. Expects ``"caffe"``
    preprocessing: BGR on [0, 255] minus the ImageNet BGR means, 224 px.
``"mobilenet_v2-imagenet"``
    MobileNetV2, torchvision's ``mobilenet_v2-b0353104.pth``. Expects
    ``"torchvision"`` preprocessing, 224 px.
``"small_cnn-stem"`` (also ``weights="stem"`` for ``small_cnn``)
    The built-in ``small_cnn`` backbone pretrained on synthetic HAADF-STEM
    patches (:mod:`stemroi.io.synth`, every lattice, defect kind, cell size,
    orientation, dose, drift and scan distortion; never a real image) by
    ``scripts/pretrain_stem.py``. Shipped inside the package
    (``stemroi/models/_pretrained``), so it needs no download; the training
    recipe and log are in ``small_cnn_stem.json`` beside it. Expects 64 x 64
    patches on [0, 1], contrast-standardised per patch (``"unit"`` preset).

Downloaded files live in ``$STEMROI_HOME/weights`` (default ``~/.cache/stemroi/weights``);
torchvision files are also found in torchvision's own cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``).
A missing file is downloaded (``urllib``, written to a temporary file and
renamed only once its size and hash check out) unless downloads are off
(``download=False`` or ``STEMROI_OFFLINE=1``) or the network is unreachable,
in which case :class:`WeightsNotFoundError` says which file to put where.

Loading never unpickles arbitrary objects: torchvision files go through
``torch.load(..., weights_only=True)`` (tensors and containers only), Keras
files through h5py, and the project's own files (:func:`save_backbone`) are
tensor archives with a JSON header read by the C++ core. ``weights=None`` or
``"random"`` gives seeded, *untrained* weights (torchvision's initialisation),
meant for tests and baselines only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "WeightsSpec",
    "REGISTRY",
    "WeightsError",
    "WeightsNotFoundError",
    "stemroi_home",
    "weights_dir",
    "weights_path",
    "torch_hub_dir",
    "cache_dirs",
    "cached_path",
    "sha256_file",
    "verify_file",
    "fetch",
    "load_torchvision_state",
    "load_keras_h5",
    "keras_to_torchvision",
    "resolve_weights",
    "pretrained_dir",
    "stem_key",
    "save_backbone",
    "load_backbone",
]


class WeightsError(ValueError):
    """A weights file is corrupt, truncated, of the wrong hash or does not fit the model."""


class WeightsNotFoundError(FileNotFoundError):
    """A known weights file is neither cached nor downloadable."""


@dataclass(frozen=True)
class WeightsSpec:
    """A known weights file and the network input it expects."""

    key: str
    filename: str
    url: str
    format: str  # "torchvision" (.pth state dict) or "keras" (.h5 weights)
    preprocessing: str  # normalisation preset the weights were trained with (stemroi.preprocessing.PRESETS)
    architecture: str = "vgg16"
    input_size: int = 224  # side of the square inputs the weights were trained on
    sha256: Optional[str] = None  # full digest when known
    sha256_prefix: Optional[str] = None  # torchvision names carry the first 8 hex digits
    size: Optional[int] = None  # bytes, when known
    description: str = ""
    shipped: bool = False  # inside the package (stemroi/models/_pretrained), never downloaded


REGISTRY: Dict[str, WeightsSpec] = {
    "imagenet": WeightsSpec(
        key="imagenet",
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        format="torchvision",
        preprocessing="torchvision",
        sha256_prefix="397923af",
        description="torchvision VGG16 ImageNet weights (IMAGENET1K_V1), features + classifier",
    ),
    "imagenet-keras": WeightsSpec(
        key="imagenet-keras",
        filename="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        url=(
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
        ),
        format="keras",
        preprocessing="caffe",
        sha256="bfe5187d0a272bed55ba430631598124cff8e880b98d38c9e56c8d66032abdc1",
        size=58_889_256,
        description="Keras applications VGG16 ImageNet weights without the top (the VGG16 study's)",
    ),
    "mobilenet_v2-imagenet": WeightsSpec(
        key="mobilenet_v2-imagenet",
        filename="mobilenet_v2-b0353104.pth",
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        format="torchvision",
        preprocessing="torchvision",
        architecture="mobilenet_v2",
        sha256_prefix="b0353104",
        description="torchvision MobileNetV2 ImageNet weights (IMAGENET1K_V1), features + classifier",
    ),
    "small_cnn-stem": WeightsSpec(
        key="small_cnn-stem",
        filename="small_cnn_stem.stemroi",
        url="",
        format="stemroi",
        preprocessing="unit",
        architecture="small_cnn",
        input_size=64,
        sha256="824abb64830f2c3d5b193293575bd1f6fe77c37d83b2f81cecb5cb7f800912cd",
        size=1_184_768,
        shipped=True,
        description="small_cnn pretrained on synthetic HAADF-STEM patches (stemroi.io.synth only, defect kind x "
                    "lattice labels) by scripts/pretrain_stem.py; shipped with the package",
    ),
    "mobilenet_v2-stem": WeightsSpec(
        key="mobilenet_v2-stem",
        filename="mobilenet_v2_stem.stemroi",
        url="",
        format="stemroi",
        preprocessing="tf",
        architecture="mobilenet_v2",
        input_size=96,
        sha256="c8ef531483845601e7a529c51a57f88fd84bbb2d8194f490fce527a5f24b4236",
        size=9_062_912,
        shipped=True,
        description="MobileNetV2 backbone (features, no ImageNet classifier) pretrained on synthetic HAADF-STEM "
                    "patches (stemroi.io.synth only, defect kind x lattice labels, 96 px input) by "
                    "scripts/pretrain_stem.py --backbone mobilenet_v2; shipped with the package",
    ),
}

# weights="stem": the STEM-pretrained weights of the architecture being built
STEM_ALIAS = "stem"
_STEM_KEYS = {"small_cnn": "small_cnn-stem", "mobilenet_v2": "mobilenet_v2-stem"}

# The largest VGG16 conv kernel has 3*3*512*512 = 2.4M values and the 13 conv
# layers 14.7M (59 MB in float32, 118 MB in float64); a dataset claiming far
# more, or a file whose datasets add up to more, is corrupt and is refused
# before anything is allocated (HDF5 fills unwritten storage with the fill
# value, so a 4 kB file can otherwise make a reader touch gigabytes).
_MAX_H5_WEIGHT_VALUES = 1 << 24
_MAX_H5_WEIGHT_BYTES = 1 << 28
# Keras splits a string-list attribute into 64 kB pieces (HDF5's object header limit).
_MAX_H5_ATTR_BYTES = 1 << 20
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def stemroi_home() -> Path:
    """``$STEMROI_HOME`` or ``~/.cache/stemroi``."""
    return Path(os.environ.get("STEMROI_HOME") or Path.home() / ".cache" / "stemroi").expanduser()


def weights_dir() -> Path:
    return stemroi_home() / "weights"


def _spec(key: str) -> WeightsSpec:
    try:
        return REGISTRY[key]
    except KeyError:
        raise ValueError(f"unknown weights {key!r} (known: {sorted(REGISTRY)}, or a file path)") from None


def pretrained_dir() -> Path:
    """The folder of the weights shipped inside the package."""
    return Path(__file__).resolve().parent / "_pretrained"


def weights_path(key: str) -> Path:
    """Where the file of a registry entry is (shipped) or is downloaded to (it may not exist yet)."""
    spec = _spec(key)
    return (pretrained_dir() if spec.shipped else weights_dir()) / spec.filename


def stem_key(architecture: str) -> str:
    """The registry key of the STEM-pretrained weights of ``architecture`` (``weights="stem"``)."""
    try:
        return _STEM_KEYS[architecture]
    except KeyError:
        raise ValueError(f"no STEM-pretrained weights for {architecture!r} (available for: "
                         f"{sorted(_STEM_KEYS)})") from None


def torch_hub_dir() -> Path:
    """torchvision's download cache: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``)."""
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser() / "hub" / "checkpoints"


def cache_dirs(key: str) -> List[Path]:
    """Folders searched, in order, for the file of registry entry ``key``."""
    spec = _spec(key)
    if spec.shipped:
        return [pretrained_dir()]
    return [weights_dir()] + ([torch_hub_dir()] if spec.format == "torchvision" else [])


def cached_path(key: str) -> Optional[Path]:
    """The cached (not yet verified) file of registry entry ``key``, or None."""
    name = _spec(key).filename
    return next((d / name for d in cache_dirs(key) if (d / name).is_file()), None)


def sha256_file(path: "os.PathLike[str] | str", chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_verified: Dict[Tuple[str, int, int], str] = {}


def _remedy(spec: WeightsSpec) -> str:
    if spec.shipped:
        return "reinstall stemroi (pip install --force-reinstall stemroi) to restore the shipped file"
    return f"delete it and download again from {spec.url}"


def verify_file(path: "os.PathLike[str] | str", spec: WeightsSpec) -> None:
    """Check size and SHA-256 of ``path`` against ``spec``; raise WeightsError naming both."""
    path = Path(path)
    st = path.stat()
    if spec.size is not None and st.st_size != spec.size:
        what = "truncated" if st.st_size < spec.size else "too large"
        raise WeightsError(
            f"weights file {path} is {what}: {st.st_size:,} bytes, expected {spec.size:,} "
            f"({spec.filename}); {_remedy(spec)}"
        )
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _verified.get(key) or sha256_file(path)
    want = spec.sha256 or spec.sha256_prefix
    if want is not None and not digest.startswith(want):
        raise WeightsError(
            f"sha256 mismatch for weights file {path}: got {digest}, expected "
            f"{spec.sha256 or spec.sha256_prefix + '...'} ({spec.filename}); the file is corrupt "
            f"or not the expected one: {_remedy(spec)}"
        )
    _verified[key] = digest


def _downloads_allowed(download: Optional[bool]) -> bool:
    if download is not None:
        return bool(download)
    return os.environ.get("STEMROI_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


def _not_found(spec: WeightsSpec, target: Path, why: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{spec.architecture} weights {spec.key!r} are not available ({why}). Download {spec.filename} from "
        f"{spec.url} and place it in {target.parent} (full path {target}), or set STEMROI_HOME "
        f"to the folder that holds weights/{spec.filename}; weights=None gives untrained weights."
    )


def fetch(
    key: str,
    *,
    download: Optional[bool] = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    timeout: float = 30.0,
) -> Path:
    """Path of the verified cached file of registry entry ``key``, downloading it if needed.

    ``download=None`` downloads unless ``STEMROI_OFFLINE=1``. ``progress(done_bytes,
    total_bytes_or_None)`` is called while downloading.
    """
    spec = _spec(key)
    if spec.shipped:
        path = pretrained_dir() / spec.filename
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{spec.architecture} weights {spec.key!r} should ship with stemroi at {path}, but the file is "
                f"missing: {_remedy(spec)}, or regenerate it with scripts/pretrain_stem.py")
        verify_file(path, spec)
        return path
    target = weights_dir() / spec.filename
    cached = cached_path(key)
    if cached is not None:
        verify_file(cached, spec)
        return cached
    if not _downloads_allowed(download):
        raise _not_found(spec, target, "not cached and downloads are off")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=target.parent)
    try:
        try:
            with urllib.request.urlopen(spec.url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                total = resp.headers.get("Content-Length")
                total = int(total) if total else None
                done = 0
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise _not_found(spec, target, f"download from {spec.url} failed: {exc}") from None
        verify_file(tmp, spec)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _as_float32(name: str, value) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise WeightsError(f"weight {name!r} has unsupported dtype {arr.dtype}")
    # np.array, not np.ascontiguousarray: the latter turns 0-d arrays (BatchNorm's
    # num_batches_tracked) into shape (1,), which then fails the shape check
    return np.array(arr, dtype=np.float32, order="C")


def load_torchvision_state(path: "os.PathLike[str] | str") -> Dict[str, np.ndarray]:
    """A torchvision ``.pth`` state dict (VGG16, MobileNetV2, ...) as ``{name: float32 array}``.

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers
    are rebuilt, nothing else in the pickle is executed.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"cannot read torchvision weights file {path}: {msg} (truncated, corrupt, or "
            "not a tensor-only state dict; weights_only=True refuses arbitrary pickles)"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"weights file {path} does not hold a state dict (got {type(obj).__name__})")
    state = {}
    for name, value in obj.items():
        name = str(name)
        if name.startswith("module."):
            name = name[len("module.") :]
        state[name] = _as_float32(name, value)
    return state


def _h5_attr_list(group, name: str):
    """Keras string-list attribute, also in its chunked form (name0, name1, ...).

    The pieces' claimed sizes are checked before h5py allocates them.
    """
    if name in group.attrs:
        pieces = [name]
    else:
        pieces = []
        while f"{name}{len(pieces)}" in group.attrs:
            pieces.append(f"{name}{len(pieces)}")
    values, n_bytes = [], 0
    for piece in pieces:
        attr = group.attrs.get_id(piece)
        n_bytes += math.prod(attr.shape or ()) * attr.dtype.itemsize
        if n_bytes > _MAX_H5_ATTR_BYTES:
            raise WeightsError(f"Keras weights file {group.file.filename}: attribute {piece!r} of {group.name!r} "
                               f"claims {n_bytes} bytes (shape {attr.shape}, dtype {attr.dtype}), more than "
                               f"{_MAX_H5_ATTR_BYTES} (corrupt file?)")
        values.extend(np.atleast_1d(group.attrs[piece]))
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def keras_to_torchvision(layers: Mapping[str, Tuple[np.ndarray, np.ndarray]], origin: str = "Keras weights") -> Dict[str, np.ndarray]:
    """{"block1_conv1": (kernel HWIO, bias)} -> torchvision names with OIHW kernels."""
    from .._lib import _core

    state = {}
    missing = []
    for index, keras_name in _core.vgg16_conv_layers():
        if keras_name not in layers:
            missing.append(keras_name)
            continue
        kernel, bias = layers[keras_name]
        kernel = np.asarray(kernel)
        if kernel.ndim != 4:
            raise WeightsError(
                f"{origin}: kernel of {keras_name} must be 4-D (kh, kw, in, out), got shape {kernel.shape}"
            )
        state[f"features.{index}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        state[f"features.{index}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
    if missing:
        raise WeightsError(f"{origin} lack VGG16 layer(s) {missing}; not a VGG16 weights file?")
    return state


def load_keras_h5(path: "os.PathLike[str] | str") -> Dict[str, np.ndarray]:
    """Keras VGG16 ``.h5`` weights -> torchvision-named ``{name: array}`` (OIHW kernels).

    Follows Keras' own reader: the root attribute ``layer_names`` lists the
    layers, each layer group's ``weight_names`` attribute lists its datasets
    in order (kernel, bias), whatever their spelling
    (``block1_conv1/kernel:0``, ``block1_conv1_W_1:0``). A full-model file's
    ``model_weights`` group is read the same way. The classifier (fc) layers
    of an include_top file are ignored.

    The file is first read in a child process under a timeout and a memory
    limit (``stemroi._hdf5``): libhdf5 itself can loop or fill gigabytes on a
    corrupt file, beyond any check made here.
    """
    from .. import _hdf5

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    problem = _hdf5.probe(path, reader=f"{__name__}:_read_keras_layers")
    if problem:
        raise WeightsError(f"cannot read Keras weights file {path}: {problem}")
    return keras_to_torchvision(_read_keras_layers(path), origin=f"Keras weights file {path}")


def _read_keras_layers(path: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """{"block1_conv1": (kernel, bias), ...} as the file stores them (h5py and numpy only: the probe's
    child process runs it too)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"cannot read Keras weights file {path}: {exc} (truncated or not HDF5?)") from None
    try:
        root = f["model_weights"] if "model_weights" in f else f
        names = _h5_attr_list(root, "layer_names")
        if not names:
            raise WeightsError(f"Keras weights file {path} has no 'layer_names' attribute (not a Keras weights file)")
        # every claim is checked before any value is read: a corrupt header can claim terabytes
        claimed = {}
        n_bytes = 0
        for name in names:
            if not (name.startswith("block") and "_conv" in name):
                continue
            if name not in root:
                raise WeightsError(f"Keras weights file {path} lists layer {name!r} but has no group for it")
            g = root[name]
            wnames = _h5_attr_list(g, "weight_names")
            if len(wnames) != 2:
                raise WeightsError(
                    f"Keras weights file {path}: layer {name!r} has {len(wnames)} weights {wnames}, expected kernel and bias"
                )
            try:
                datasets = [g[w] for w in wnames]
            except (KeyError, OSError) as exc:
                raise WeightsError(f"Keras weights file {path}: cannot read layer {name!r}: {exc}") from None
            for w, ds in zip(wnames, datasets):
                where = f"weight {w!r} of layer {name!r}"
                what = f"Keras weights file {path}: {where}"
                if not isinstance(ds, h5py.Dataset):
                    raise WeightsError(f"{what} is a {type(ds).__name__}, expected a dataset")
                # the dtype before the size: a string or sub-array dtype multiplies the bytes per value
                if ds.dtype.kind not in "fiu" or ds.dtype.shape != () or ds.dtype.itemsize > 8:
                    raise WeightsError(f"{what} has dtype {ds.dtype}, expected numbers (float, int)")
                if ds.size > _MAX_H5_WEIGHT_VALUES:
                    raise WeightsError(f"{what} claims shape {ds.shape}, more than {_MAX_H5_WEIGHT_VALUES} "
                                       "values (corrupt file?)")
                # HDF5 inflates a whole compressed chunk to read any value of it
                chunk = math.prod(ds.chunks or (0,)) * ds.dtype.itemsize
                if chunk > _MAX_H5_WEIGHT_BYTES:
                    raise WeightsError(f"{what} claims chunks of {ds.chunks} values, more than "
                                       f"{_MAX_H5_WEIGHT_BYTES >> 20} MiB each (corrupt file?)")
                n_bytes += ds.size * ds.dtype.itemsize
                if n_bytes > _MAX_H5_WEIGHT_BYTES:
                    raise WeightsError(f"Keras weights file {path}: its VGG16 layers claim more than "
                                       f"{_MAX_H5_WEIGHT_BYTES >> 20} MiB of weights, up to {where} (corrupt file?)")
            claimed[name] = datasets
        layers = {}
        for name, datasets in claimed.items():
            try:
                layers[name] = tuple(np.asarray(ds) for ds in datasets)
            except OSError as exc:
                raise WeightsError(f"Keras weights file {path}: cannot read layer {name!r}: {exc}") from None
    except WeightsError:
        raise
    # RuntimeError: HDF5's own errors on corrupt structure (bad symbol table node, ...)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"cannot read Keras weights file {path}: {exc} (truncated or corrupt?)") from None
    finally:
        f.close()
    return layers


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80":  # torch.save zip / legacy pickle
        return "torchvision"
    return "stemroi"


def resolve_weights(weights, *, download: Optional[bool] = None, architecture: str = "vgg16"):
    """Turn a ``weights`` argument into ``(state or None, preprocessing or None, source)``.

    ``None``/``"random"`` -> ``(None, None, "random")`` (seeded untrained init);
    a registry key -> the verified cached file; a path -> loaded by content
    (HDF5: Keras, zip: torchvision ``torch.save``, otherwise the project's
    model file, whose ``architecture`` metadata must match).
    """
    if weights is None or (isinstance(weights, str) and weights == "random"):
        return None, None, "random"
    if isinstance(weights, str) and weights == STEM_ALIAS:
        weights = stem_key(architecture)
    if isinstance(weights, str) and weights in REGISTRY:
        spec = REGISTRY[weights]
        if spec.architecture != architecture:
            known = sorted(k for k, v in REGISTRY.items() if v.architecture == architecture)
            raise ValueError(f"weights {weights!r} are {spec.architecture} weights, not {architecture} "
                             f"(known {architecture} weights: {known})")
        path = fetch(weights, download=download)
        if spec.format == "stemroi":
            state, _ = load_backbone(path, architecture=architecture)
        else:
            state = load_keras_h5(path) if spec.format == "keras" else load_torchvision_state(path)
        return state, spec.preprocessing, f"{weights} ({path})"
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights must be None, 'random', 'stem', one of {sorted(REGISTRY)} or a file path, "
            f"got {type(weights).__name__}"
        )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {os.fspath(weights)!r}: no such file (known names: "
            f"{sorted(REGISTRY) + ['random', STEM_ALIAS]})"
        )
    kind = _sniff(path)
    if kind == "keras":
        return load_keras_h5(path), "caffe", os.fspath(path)
    if kind == "torchvision":
        return load_torchvision_state(path), "torchvision", os.fspath(path)
    state, meta = load_backbone(path, architecture=architecture)
    return state, meta.get("preprocessing") or None, os.fspath(path)


def save_backbone(
    path: "os.PathLike[str] | str",
    state: Mapping[str, np.ndarray],
    *,
    architecture: str = "vgg16",
    preprocessing: str,
    config: Optional[Mapping] = None,
    model_card: Optional[Mapping] = None,
) -> None:
    """Save backbone weights in the project's safe model file (atomic write).

    ``model_card`` should say what the weights are: training data, split,
    metrics, origin (e.g. ``{"weights": "imagenet-keras", "fine_tuned_on": ...}``).
    """
    from ..io.model_file import save_model_file

    meta = {
        "architecture": architecture,
        "preprocessing": preprocessing,
        "config": dict(config or {}),
        "model_card": dict(model_card or {}),
        "kind": "backbone",
    }
    save_model_file(path, {k: np.asarray(v) for k, v in state.items()}, meta)


def load_backbone(path: "os.PathLike[str] | str", *, architecture: Optional[str] = "vgg16"):
    """``(state, metadata)`` from a file written by :func:`save_backbone`.

    The file is parsed by the project's validating reader: a pickle or any
    other foreign file is refused with OSError, never executed.
    """
    from ..io.model_file import load_model_file

    state, meta = load_model_file(path)
    got = meta.get("architecture")
    if architecture is not None and got != architecture:
        raise WeightsError(f"model file {os.fspath(path)} holds architecture {got!r}, expected {architecture!r}")
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}, meta


def _describe_registry() -> str:  # pragma: no cover - used in docs
    return json.dumps({k: v.__dict__ for k, v in REGISTRY.items()}, indent=2)
