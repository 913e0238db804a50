"""stemroi.models.weights: registry, cache, download/offline, and the loaders on
synthetic files written in exactly the torchvision (torch.save) and Keras
(h5py, as Keras' save_weights writes them) layouts."""
from __future__ import annotations

import hashlib
import io
import os
import pickle

import numpy as np
import pytest
import torch

from stemroi import VGG16Features
from stemroi.models import weights as weights
from stemroi._lib import _core

h5py = pytest.importorskip("h5py")

# (Keras layer name, kernel shape HWIO) of VGG16 without the top.
KERAS_CONVS = []
for b, (n, cin, cout) in enumerate([(2, 3, 64), (2, 64, 128), (3, 128, 256), (3, 256, 512), (3, 512, 512)], start=1):
    for i in range(1, n + 1):
        KERAS_CONVS.append((f"block{b}_conv{i}", (3, 3, cin if i == 1 else cout, cout)))


def keras_layers(seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    return {
        name: (rng.normal(0, scale, shape).astype(np.float32), rng.normal(0, 0.1, shape[-1]).astype(np.float32))
        for name, shape in KERAS_CONVS
    }


def write_keras_h5(path, layers, style="keras2", drop=(), override=None):
    """Keras' save_weights layout: root attrs layer_names/backend/keras_version,
    one group per layer with a weight_names attr; keras2 nests the datasets as
    <layer>/<layer>/kernel:0, Keras 1 (the 2016 notop file) as <layer>/<layer>_W_1:0."""
    override = override or {}
    order = ["input_1"]
    for b in range(1, 6):
        order += [n for n, _ in KERAS_CONVS if n.startswith(f"block{b}_")] + [f"block{b}_pool"]
    order = [n for n in order if n not in drop]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in order])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name in order:
            g = f.create_group(name)
            if name not in layers:
                g.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel, bias = override.get(name, layers[name])
            if style == "keras2":
                names = [f"{name}/kernel:0", f"{name}/bias:0"]
            else:
                names = [f"{name}_W_1:0", f"{name}_b_1:0"]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            g.create_dataset(names[0], data=kernel)
            g.create_dataset(names[1], data=bias)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    layers = keras_layers()
    path = tmp_path_factory.mktemp("keras") / "vgg16_notop.h5"
    write_keras_h5(path, layers)
    return path, layers


def conv3x3_numpy(x, kernel, bias):
    """x (cin, H, W), kernel HWIO, zero padding 1, cross-correlation + bias, ReLU."""
    cin, H, W = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((kernel.shape[3], H, W), np.float64)
    for ky in range(3):
        for kx in range(3):
            out += np.einsum("ihw,io->ohw", xp[:, ky : ky + H, kx : kx + W], kernel[ky, kx].astype(np.float64))
    return np.maximum(out + bias[:, None, None], 0.0)


def test_registry_entries():
    k = weights.REGISTRY["imagenet-keras"]
    assert k.filename == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert k.size == 58_889_256
    assert k.sha256 == "bfe5187d0a272bed55ba430631598124cff8e880b98d38c9e56c8d66032abdc1"
    assert k.preprocessing == "caffe" and k.format == "keras"
    t = weights.REGISTRY["imagenet"]
    assert t.filename == "vgg16-397923af.pth" and t.sha256_prefix == "397923af"
    assert t.preprocessing == "torchvision"
    m = weights.REGISTRY["mobilenet_v2-imagenet"]
    assert m.filename == "mobilenet_v2-b0353104.pth" and m.sha256_prefix == "b0353104"
    assert (m.architecture, m.format, m.preprocessing) == ("mobilenet_v2", "torchvision", "torchvision")
    # every entry says what input its weights expect: a known preset and the input size
    from stemroi.preprocessing import PRESETS

    for key, spec in weights.REGISTRY.items():
        assert spec.key == key and spec.preprocessing in PRESETS
        # ImageNet files 224; the STEM-pretrained ones the size they were trained at
        want = {"small_cnn-stem": 64, "mobilenet_v2-stem": 96}.get(key, 224)
        assert spec.input_size == want, key
        assert spec.architecture in ("vgg16", "mobilenet_v2", "small_cnn")
    # a registry key of another architecture is refused, not loaded into the wrong network
    with pytest.raises(ValueError, match="'mobilenet_v2-imagenet' are mobilenet_v2 weights, not vgg16"):
        weights.resolve_weights("mobilenet_v2-imagenet", architecture="vgg16")


def test_cache_dir_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMROI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("STEMROI_OFFLINE", "1")
    assert weights.cache_dirs("imagenet") == [tmp_path / "home" / "weights", tmp_path / "torch" / "hub" / "checkpoints"]
    assert weights.cache_dirs("imagenet-keras") == [tmp_path / "home" / "weights"]
    assert weights.cached_path("imagenet") is None
    assert weights.weights_path("imagenet-keras") == tmp_path / "home" / "weights" / weights.REGISTRY["imagenet-keras"].filename
    folder = str(tmp_path / "home" / "weights")
    with pytest.raises(weights.WeightsNotFoundError, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") as e:
        weights.fetch("imagenet-keras")
    assert folder in str(e.value) and "storage.googleapis.com" in str(e.value)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        VGG16Features(weights="imagenet").fit()
    monkeypatch.delenv("STEMROI_HOME")
    assert weights.stemroi_home() == weights.Path.home() / ".cache" / "stemroi"


class _FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_download_is_verified_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMROI_HOME", str(tmp_path))
    payload = b"pretend weights" * 100
    spec = weights.WeightsSpec(
        key="toy", filename="toy.bin", url="https://example.invalid/toy.bin", format="torchvision",
        preprocessing="torchvision", sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
    )
    monkeypatch.setitem(weights.REGISTRY, "toy", spec)
    served = {"data": payload[:-10]}  # first a truncated download
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(served["data"]))
    with pytest.raises(weights.WeightsError, match="truncated: 1,490 bytes, expected 1,500"):
        weights.fetch("toy", download=True)
    assert list((tmp_path / "weights").iterdir()) == []  # nothing half-written left
    served["data"] = payload[:-1] + b"!"  # right size, wrong bytes
    with pytest.raises(weights.WeightsError, match="sha256 mismatch"):
        weights.fetch("toy", download=True)
    served["data"] = payload
    seen = []
    path = weights.fetch("toy", download=True, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == payload and seen[-1] == (1500, 1500)

    def unreachable(url, timeout):
        raise weights.urllib.error.URLError("no route to host")

    monkeypatch.setattr(weights.urllib.request, "urlopen", unreachable)
    path.unlink()
    with pytest.raises(weights.WeightsNotFoundError, match=r"no route to host.*toy\.bin"):
        weights.fetch("toy", download=True)


def test_cached_file_with_wrong_hash_or_size(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMROI_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "vgg16-397923af.pth").write_bytes(b"not the torchvision file")
    with pytest.raises(weights.WeightsError, match=r"sha256 mismatch .*expected 397923af\.\.\."):
        weights.fetch("imagenet", download=False)
    (tmp_path / "weights" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"\0" * 1000)
    with pytest.raises(weights.WeightsError, match="truncated: 1,000 bytes, expected 58,889,256"):
        weights.fetch("imagenet-keras", download=False)


@pytest.mark.parametrize("style", ["keras2", "keras1"])
def test_keras_loader_reproduces_numpy_block1(tmp_path, keras_file, style, rng):
    path, layers = keras_file
    if style == "keras1":
        path = tmp_path / "keras1.h5"
        write_keras_h5(path, layers, style="keras1")
    state = weights.load_keras_h5(path)
    assert len(state) == 26
    np.testing.assert_array_equal(state["features.0.weight"], layers["block1_conv1"][0].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["features.28.bias"], layers["block5_conv3"][1])
    patches = rng.random((2, 32, 32), dtype=np.float32)
    ext = VGG16Features(weights=path, layer=["block1_conv1", "block1_conv2"], pooling="flatten", input_size=None)
    out = ext.transform(patches)
    assert ext.preprocessing_ == "caffe"
    c1 = out[:, : 64 * 32 * 32].reshape(2, 64, 32, 32)
    c2 = out[:, 64 * 32 * 32 :].reshape(2, 64, 32, 32)
    for k in range(2):
        bgr = np.stack([patches[k] * 255 - m for m in (103.939, 116.779, 123.68)])  # grey: B = G = R
        ref1 = conv3x3_numpy(bgr, *layers["block1_conv1"])
        ref2 = conv3x3_numpy(ref1, *layers["block1_conv2"])
        assert np.abs(c1[k] - ref1).max() / np.abs(ref1).max() < 1e-5
        assert np.abs(c2[k] - ref2).max() / np.abs(ref2).max() < 1e-5


def test_keras_loader_reads_a_name_list_split_into_pieces(tmp_path, keras_file):
    """Keras writes a name list over HDF5's 64 kB header limit as layer_names0, layer_names1, ..."""
    path, layers = keras_file
    split = tmp_path / "split.h5"
    split.write_bytes(path.read_bytes())
    with h5py.File(split, "a") as f:
        names = f.attrs["layer_names"]
        del f.attrs["layer_names"]
        for k, piece in enumerate(np.array_split(names, 3)):
            f.attrs[f"layer_names{k}"] = piece
    state = weights.load_keras_h5(split)
    assert len(state) == 26
    np.testing.assert_array_equal(state["features.28.bias"], layers["block5_conv3"][1])
    with h5py.File(split, "a") as f:
        del f.attrs["layer_names1"]  # the pieces after a gap are not read: block3-5 are missing
    with pytest.raises(weights.WeightsError, match=r"lack VGG16 layer\(s\) \['block3_conv1', 'block3_conv2'"):
        weights.load_keras_h5(split)


def test_keras_loader_errors(tmp_path, keras_file):
    path, layers = keras_file
    missing = tmp_path / "missing.h5"
    write_keras_h5(missing, layers, drop=("block5_conv3",))
    with pytest.raises(weights.WeightsError, match=r"lack VGG16 layer\(s\) \['block5_conv3'\]"):
        weights.load_keras_h5(missing)
    wrong = tmp_path / "wrong.h5"
    bad_kernel = np.zeros((3, 3, 1, 64), np.float32)
    write_keras_h5(wrong, layers, override={"block1_conv1": (bad_kernel, layers["block1_conv1"][1])})
    with pytest.raises(ValueError, match=r"shape mismatch .*'features\.0\.weight': weights have \(64, 1, 3, 3\)"):
        VGG16Features(weights=wrong).fit()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(weights.WeightsError, match="cannot read Keras weights file .*truncated"):
        weights.load_keras_h5(truncated)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(weights.WeightsError, match="no 'layer_names' attribute"):
        weights.load_keras_h5(plain)


def _features_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for (index, _), (_, (kh, kw, cin, cout)) in zip(_core.vgg16_conv_layers(), KERAS_CONVS):
        state[f"features.{index}.weight"] = torch.randn(cout, cin, kh, kw, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.randn(cout, generator=g) * 0.1
    return state


def test_torchvision_loader(tmp_path, rng):
    state = _features_state(1)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    loaded = weights.load_torchvision_state(path)
    assert set(loaded) == set(state)
    np.testing.assert_array_equal(loaded["features.10.weight"], state["features.10.weight"].numpy())
    ext = VGG16Features(weights=path, input_size=None)
    patches = rng.random((1, 32, 32), dtype=np.float32)
    with torch.inference_mode():
        net = torch.nn.Sequential(*[m for m in __import__("torchvision").models.vgg16().features])
        net.load_state_dict({k[len("features."):]: v for k, v in state.items()})
        x = torch.from_numpy(patches)[:, None].repeat(1, 3, 1, 1)
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        ref = net(x).mean((2, 3)).numpy()
    out = ext.transform(patches)
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4
    assert ext.preprocessing_ == "torchvision"

    wrong = dict(state)
    wrong["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"'features\.0\.weight': weights have \(64, 1, 3, 3\), model expects \(64, 3, 3, 3\)"):
        VGG16Features(weights=tmp_path / "wrong.pth").fit()
    partial = {k: v for k, v in state.items() if not k.startswith("features.28")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \(2\): features\.28\.bias, features\.28\.weight"):
        VGG16Features(weights=tmp_path / "partial.pth").fit()
    (tmp_path / "truncated.pth").write_bytes(path.read_bytes()[:4096])
    with pytest.raises(weights.WeightsError, match="cannot read torchvision weights file .*truncated"):
        weights.load_torchvision_state(tmp_path / "truncated.pth")


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil_pth = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Exploit(str(marker))}, evil_pth)
    with pytest.raises(weights.WeightsError, match="weights_only=True refuses"):
        weights.load_torchvision_state(evil_pth)
    raw = tmp_path / "evil.stemroi"
    raw.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(OSError):
        weights.load_backbone(raw)
    with pytest.raises(weights.WeightsError, match="weights_only=True refuses"):
        VGG16Features(weights=raw).fit()  # sniffed as a pickle: only weights_only torch.load sees it
    assert not marker.exists()


def test_project_model_file_roundtrip(tmp_path, rng):
    src = VGG16Features(input_size=None, random_state=9).fit()
    path = tmp_path / "backbone.stemroi"
    weights.save_backbone(
        path, src.model_.state_dict(), preprocessing="caffe", config={"input_size": 224},
        model_card={"training_data": "none (seeded random init)", "metrics": {}},
    )
    state, meta = weights.load_backbone(path)
    assert meta["architecture"] == "vgg16" and meta["preprocessing"] == "caffe"
    assert meta["model_card"]["training_data"].startswith("none") and meta["config"] == {"input_size": 224}
    patches = rng.random((2, 32, 32), dtype=np.float32)
    reloaded = VGG16Features(weights=path, input_size=None, random_state=0)
    assert reloaded.fit().preprocessing_ == "caffe"
    expected = VGG16Features(input_size=None, random_state=9, preprocessing="caffe").transform(patches)
    np.testing.assert_array_equal(reloaded.transform(patches), expected)
    with pytest.raises(weights.WeightsError, match="architecture 'vgg16', expected 'mobilenet_v2'"):
        weights.load_backbone(path, architecture="mobilenet_v2")


def test_torchvision_loader_keeps_0d_tensors(tmp_path):
    # BatchNorm's num_batches_tracked is 0-d; a (1,) tensor would fail the
    # backbone's shape check for MobileNetV2 files
    import torch

    from stemroi.models.weights import load_torchvision_state

    p = tmp_path / "bn.pth"
    torch.save({"bn.weight": torch.ones(4), "bn.num_batches_tracked": torch.tensor(7)}, p)
    state = load_torchvision_state(p)
    assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 7
    assert state["bn.weight"].shape == (4,) and state["bn.weight"].dtype == np.float32
