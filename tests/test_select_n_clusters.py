"""select_n_clusters (the k sweep scored in one pass) against looping
scikit-learn, and cluster-to-class accuracy with Hungarian matching."""
from __future__ import annotations

import numpy as np
import pytest

from stemroi import KMeans, cluster_accuracy, select_n_clusters, silhouette_score
from stemroi.metrics import cluster_confusion_matrix

skm = pytest.importorskip("sklearn.metrics")
from scipy.optimize import linear_sum_assignment  # noqa: E402
from sklearn.cluster import KMeans as SKKMeans  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402


@pytest.fixture(scope="module")
def separated():
    X, y = make_blobs(n_samples=1200, n_features=6, centers=4, cluster_std=0.8, random_state=3)
    return X, y


def test_chooses_same_k_as_sklearn_loop_and_scores_match(separated):
    X, _ = separated
    sel = select_n_clusters(X, range(2, 8), n_init=4, random_state=0)
    sk_scores = []
    for k in range(2, 8):
        labels = SKKMeans(k, n_init=4, random_state=0).fit(X).labels_
        sk_scores.append(skm.silhouette_score(X, labels))
        # the silhouette part, exactly: same labels -> same score
        assert sel.scores[k - 2] == pytest.approx(skm.silhouette_score(X, sel.labels[k]), abs=1e-12)
    assert sel.best_k == 4 == 2 + int(np.argmax(sk_scores))
    # k <= 4: both reach the same (unique) optimum; above, the split of a true
    # blob depends on the k-means++ draws (different generators)
    np.testing.assert_allclose(sel.scores[:3], sk_scores[:3], atol=1e-9)
    np.testing.assert_allclose(sel.scores[3:], sk_scores[3:], atol=0.02)


def test_float32_scores_and_labels_equal_kmeans(separated):
    X = separated[0].astype(np.float32)
    sel = select_n_clusters(X, [2, 3, 4, 5], n_init=3, random_state=11)
    for k in sel.k_values:
        km = KMeans(k, n_init=3, random_state=11).fit(X)
        np.testing.assert_array_equal(sel.labels[k], km.labels_)
        assert sel.inertias[sel.k_values.index(k)] == km.inertia_
        assert sel.scores[sel.k_values.index(k)] == pytest.approx(skm.silhouette_score(X, km.labels_), abs=1e-6)
        # the sweep sums each cluster from the cells of the joint partition of
        # all k (one distance pass): equal to the single-labeling value up to rounding
        assert sel.scores[sel.k_values.index(k)] == pytest.approx(silhouette_score(X, km.labels_), rel=1e-13, abs=1e-15)


def test_real_features_sweep_matches_sklearn_silhouettes(cdte_fft_features):
    F = cdte_fft_features[0].astype(np.float32)
    sel = select_n_clusters(F, range(2, 9), n_init=2, random_state=0)
    for k in sel.k_values:
        assert sel.scores[k - 2] == pytest.approx(skm.silhouette_score(F, sel.labels[k]), abs=1e-6)


def test_deterministic_across_threads(separated):
    X = separated[0]
    a = select_n_clusters(X, range(2, 6), n_init=3, random_state=2, n_threads=1)
    b = select_n_clusters(X, range(2, 6), n_init=3, random_state=2, n_threads=2)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.inertias, b.inertias)
    for k in a.k_values:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])


def test_sample_size_uses_sklearn_subset(separated):
    X = separated[0]
    sel = select_n_clusters(X, [3, 4], n_init=2, random_state=5, sample_size=400)
    for i, k in enumerate(sel.k_values):
        ref = skm.silhouette_score(X, sel.labels[k], sample_size=400, random_state=5)
        assert sel.scores[i] == pytest.approx(ref, abs=1e-12)


def test_table_and_dict(separated):
    sel = select_n_clusters(separated[0], [2, 4], n_init=1, random_state=0)
    d = sel.as_dict()
    assert d["k_values"] == [2, 4] and d["best_k"] == sel.best_k and len(d["scores"]) == 2
    assert "<- best" in sel.table() and sel.table().count("\n") == 2


@pytest.mark.parametrize(
    "k_range,match",
    [([1, 2], "must be >= 2 for a silhouette score, got 1"), ([2, 10], "<= n_samples - 1 = 9, got 10"), ([], "k_range is empty"),
     # a 2-tuple reads as "from 2 to 5" but would try only 2 and 5
     ((2, 5), r"k_range=\(2, 5\) would try only k = 2 and k = 5: .* give range\(2, 6\) .* or the list \[2, 5\]")],
)
def test_bad_k_range(k_range, match):
    X = np.random.default_rng(0).standard_normal((10, 2))
    with pytest.raises(ValueError, match=match):
        select_n_clusters(X, k_range)


def test_k_range_pairs_that_are_not_ambiguous():
    X = np.random.default_rng(0).standard_normal((12, 2))
    assert select_n_clusters(X, (2, 3), n_init=1, random_state=0).k_values == [2, 3]  # adjacent: a range or a set, same k
    assert select_n_clusters(X, [2, 5], n_init=1, random_state=0).k_values == [2, 5]  # a list is taken as the set it is


@pytest.mark.parametrize("sample_size, said", [(None, "10 samples: "), (8, "8 samples scored by the silhouette: ")])
def test_identical_rows_say_so(sample_size, said):
    # blank or constant patches give identical features: K-means finds one cluster at every k
    X = np.ones((10, 3))
    with pytest.raises(ValueError, match=r"k = 2: K-means found 1 distinct cluster among the " + said + "they are all identical"):
        select_n_clusters(X, [2, 3], sample_size=sample_size, random_state=0)


# ---- cluster accuracy -------------------------------------------------------

def reference_accuracy(y, labels, weighted=False):
    classes, yc = np.unique(y, return_inverse=True)
    clusters, lc = np.unique(labels, return_inverse=True)
    C = np.zeros((len(classes), len(clusters)))
    np.add.at(C, (yc, lc), 1)
    r, c = linear_sum_assignment(C, maximize=True)
    if weighted:
        per = np.zeros(len(classes))
        per[r] = C[r, c] / C.sum(axis=1)[r]
        return per.mean()
    return C[r, c].sum() / len(y)


def test_accuracy_permutation_and_rectangular_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    perm = np.array([2, 0, 3, 1])
    assert cluster_accuracy(y, perm[y]) == 1.0
    for n_clusters in (2, 4, 7):  # fewer, equal, more clusters than classes
        labels = np.where(rng.random(500) < 0.7, y % n_clusters, rng.integers(0, n_clusters, 500))
        for w in (False, True):
            assert cluster_accuracy(y, labels, sample_weighted=w) == pytest.approx(reference_accuracy(y, labels, w))


def test_confusion_matrix_and_mapping_with_string_classes():
    y = np.array(["Bulk"] * 6 + ["SF1"] * 3 + ["Twin"] * 1)
    labels = np.array([5, 5, 5, 5, 5, 1, 1, 1, 1, 1])
    conf = cluster_confusion_matrix(y, labels)
    np.testing.assert_array_equal(conf.matrix, [[1, 5], [3, 0], [1, 0]])
    assert conf.mapping == {5: "Bulk", 1: "SF1"}
    assert list(conf.classes) == ["Bulk", "SF1", "Twin"] and list(conf.clusters) == [1, 5]
    assert cluster_accuracy(y, labels) == pytest.approx(0.8)
    assert cluster_accuracy(y, labels, sample_weighted=True) == pytest.approx((5 / 6 + 1.0 + 0.0) / 3)


def test_accuracy_bad_input():
    with pytest.raises(ValueError, match="length 2 does not match the 3 samples"):
        cluster_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="y_true: expected a 1-D array"):
        cluster_accuracy(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="y_true: empty"):
        cluster_accuracy([], [])


# ---- choosing k: stability, gap statistic, 1-SE rule ---------------------------------------------

def test_adjusted_rand_matches_sklearn():
    from sklearn.metrics import adjusted_rand_score as sk_ari

    from stemroi.metrics import adjusted_rand_score

    rng = np.random.default_rng(4)
    for ka, kb in ((2, 2), (3, 7), (5, 4)):
        a, b = rng.integers(0, ka, 300), rng.integers(0, kb, 300)
        b[:200] = a[:200]  # partly agreeing
        assert adjusted_rand_score(a, b) == pytest.approx(sk_ari(a, b), abs=1e-12)
    a = rng.integers(0, 4, 100)
    assert adjusted_rand_score(a, np.array([7, 1, 5, 2])[a]) == pytest.approx(1.0)  # renaming
    assert adjusted_rand_score(np.zeros(5), np.zeros(5)) == 1.0 == sk_ari(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="length 3 does not match the 4 samples"):
        adjusted_rand_score([0, 1, 0, 1], [0, 1, 1])


def test_all_criteria_find_separated_blobs_and_are_deterministic(separated):
    X, _ = separated
    kw = dict(n_init=3, random_state=1, criteria="all", n_resamples=5, n_references=5)
    sel = select_n_clusters(X, range(2, 8), **kw)
    assert sel.choices == {"silhouette": 4, "stability": 4, "silhouette_1se": 4, "gap": 4}
    assert sel.best_k == 4 and sel.rule == "silhouette_1se"
    j = sel.k_values.index(4)
    assert sel.stability[j] == pytest.approx(1.0, abs=1e-9)  # every subsample recovers the 4 blobs
    assert sel.stability[sel.k_values.index(5)] < 0.95       # splitting a blob is not reproducible
    assert np.argmax(np.diff(sel.gap)) == 1                   # the gap jumps most from k = 3 to 4
    assert np.all(sel.gap_se > 0) and sel.resampled_scores.shape == (6,)
    again = select_n_clusters(X, range(2, 8), **kw)
    for name in ("scores", "stability", "stability_std", "resampled_scores", "gap", "gap_se"):
        np.testing.assert_array_equal(getattr(sel, name), getattr(again, name))
    d = sel.as_dict()
    assert d["choices"]["gap"] == 4 and len(d["stability"]) == 6 and "gap" in sel.table()


def test_gap_prefers_few_clusters_without_structure():
    # uniform in a box with distinct principal axes: the PCA-aligned reference box is the data's box
    X = np.random.default_rng(0).uniform(size=(600, 3)) * [4.0, 2.0, 1.0]
    sel = select_n_clusters(X, range(2, 7), n_init=2, random_state=0, criteria="gap", n_references=8)
    assert sel.choices["gap"] == 2 and sel.best_k == sel.choices["silhouette"]  # rule: silhouette by default
    assert np.all(np.abs(sel.gap) < 0.15)  # the data look like their uniform references (blobs: gap > 2)


def test_silhouette_1se_rule_prefers_fewer_clusters_within_one_sd():
    from stemroi.cluster._kmeans import _silhouette_1se_choice

    ks = [2, 3, 4, 5, 6]
    mean = np.array([0.20, 0.30, 0.34, 0.35, 0.33])
    assert _silhouette_1se_choice(ks, mean, np.full(5, 0.02)) == 4   # 0.34 >= 0.35 - 0.02
    assert _silhouette_1se_choice(ks, mean, np.full(5, 0.001)) == 5  # no slack: the maximum


@pytest.mark.parametrize("kw,exc,match", [
    (dict(criteria="elbow"), ValueError, "unknown criterion 'elbow'"),
    (dict(rule="gap"), ValueError, "rule='gap' needs 'gap' in criteria"),
    (dict(rule="best"), ValueError, "rule must be one of"),
    (dict(criteria="all", resample_fraction=1.5), ValueError, "resample_fraction must be a number in \\(0, 1\\), got 1.5"),
    (dict(criteria="gap", n_references=1), ValueError, "n_references must be >= 2"),
    (dict(criteria=3), TypeError, "criteria must be"),
])
def test_bad_criteria(separated, kw, exc, match):
    with pytest.raises(exc, match=match):
        select_n_clusters(separated[0][:100], [2, 3], n_init=1, **kw)
