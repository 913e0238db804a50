"""One fitted model shared by several threads: every detector gives, from 4
threads at once, exactly what it gives serially (the "Thread safety" paragraph
of stemroi.detect's docstring)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import stemroi
from stemroi.detection import cluster_map, segmentation_map
from stemroi.io import synth
from stemroi.models import BulkCVAE, DefectSegmenter, PatchClassifier

N_THREADS = 4
ROUNDS = 3  # every frame several times, in a different order each round, to vary the interleaving


@pytest.fixture(scope="module")
def patches():
    return synth.make_patch_dataset(n_per_class=8, patch_size=64, classes=["Bulk", "vacancy"], random_state=0)


@pytest.fixture(scope="module")
def frames():
    return [synth.make_image((256, 256), defects={"vacancy": 2}, random_state=10 + i).image for i in range(4)]


def _concurrently(fn, frames):
    """``fn`` over every frame ROUNDS times from N_THREADS threads, results by frame index."""
    order = [i for r in range(ROUNDS) for i in np.random.default_rng(r).permutation(len(frames))]
    with ThreadPoolExecutor(N_THREADS) as pool:
        outs = list(pool.map(lambda i: (i, fn(frames[i])), order))
    by_frame = {i: [] for i in range(len(frames))}
    for i, out in outs:
        by_frame[i].append(out)
    return by_frame


def _same_as_serial(fn, frames):
    serial = [fn(f) for f in frames]
    for i, outs in _concurrently(fn, frames).items():
        assert len(outs) == ROUNDS
        for out in outs:
            assert out == serial[i], f"frame {i}: a concurrent run differs from the serial run"
    return serial


def _fingerprint(result):
    """Everything a result holds: its JSON (tiles, probabilities, scores) and its maps' bytes."""
    return result.to_json(), {k: m.tobytes() for k, m in result.maps.items()}


@pytest.mark.parametrize("n_threads", [1, 2])
def test_detect_from_four_threads_equals_serial(patches, frames, n_threads):
    X, y, names = patches
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=2, input_size=32,
                          batch_size=8, validation_fraction=0, calibrate=False, random_state=0,
                          n_threads=n_threads).fit(X, y, class_names=names)
    serial = _same_as_serial(lambda f: _fingerprint(stemroi.detect(f, clf, patch=64, stride=32)), frames)
    assert len({s[0] for s in serial}) == len(frames)  # the frames give different results
    probs = stemroi.detect(frames[0], clf, patch=64, stride=32).probabilities
    assert probs.shape == (49, 2) and np.allclose(probs.sum(axis=1), 1.0)


def test_bulk_cvae_scores_and_anomaly_map_from_four_threads_equal_serial(frames):
    bulk = synth.make_image((128, 128), random_state=1).image
    cvae = BulkCVAE(latent_dim=4, epochs=2, crop_size=16, n_crops=64, blur_sigma=0.5, detector="energy",
                    energy_window=5, learning_rate=2e-3, random_state=0, n_threads=2).fit(bulk)
    crops = [np.stack([f[r:r + 16, c:c + 16] for r in range(0, 240, 24) for c in range(0, 240, 24)]) for f in frames]
    scores = _same_as_serial(lambda x: {k: v.tobytes() for k, v in cvae.score_all(x).items()}, crops)
    assert len(scores[0]) == 5
    _same_as_serial(lambda f: _fingerprint(stemroi.anomaly_map(f, cvae, stride=16)), frames)
    assert stemroi.anomaly_map(frames[0], cvae, stride=16).maps["anomaly"].shape == (256, 256)


def test_segmentation_and_cluster_maps_from_four_threads_equal_serial(patches, frames):
    X, y, names = patches
    seg = DefectSegmenter(epochs=1, batch_size=8, base_channels=4, random_state=0, n_threads=2).fit(X, y)
    _same_as_serial(lambda f: _fingerprint(segmentation_map(f, seg)), frames)
    clusterer = stemroi.PatchClusterer(features="fft", n_components=4, k_range=range(2, 4), n_init=2,
                                       random_state=0, n_threads=2).fit(X)
    serial = _same_as_serial(lambda f: _fingerprint(cluster_map(f, clusterer, patch=64, stride=32)), frames)
    assert '"n_tiles": 49' in serial[0][0]


def test_vgg16_features_loaded_on_first_use_by_four_threads_at_once():
    """The first transform fits (loads the weights); threads arriving together wait for one fit."""
    from stemroi.features import VGG16Features

    class CountingVGG16(VGG16Features):
        fits = 0

        def fit(self, X=None, y=None):
            CountingVGG16.fits += 1
            return super().fit(X, y)

    rng = np.random.default_rng(0)
    batches = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(N_THREADS)]
    kw = dict(weights=None, input_size=32, random_state=0, n_threads=1)
    shared = CountingVGG16(**kw)
    with ThreadPoolExecutor(N_THREADS) as pool:
        outs = list(pool.map(shared.transform, batches))
    assert CountingVGG16.fits == 1
    serial = VGG16Features(**kw)
    for x, out in zip(batches, outs):
        np.testing.assert_array_equal(out, serial.transform(x))
    assert outs[0].shape == (3, 512)
