"""VGG16 patch embeddings (the VGG16 study's 512-d block5_pool average) -> PCA -> K-means.

Shows stemroi.VGG16Features.transform on labelled patches, stemroi.features.extract_image_features
on every 64x64 tile of an image, and clustering of the embeddings
(stemroi.PCA, stemroi.KMeans, stemroi.cluster_accuracy). Uses the ImageNet
weights when they are in the cache ($STEMROI_HOME, see docs/weights.md);
otherwise seeded untrained weights ("random", a baseline only), and says so.
Synthetic patches by default, the real CdTe patches with --data.

    python examples/vgg16_features.py [--quick] [--data] [--weights random|imagenet-keras|PATH] [--out DIR]
"""
import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import stemroi
import stemroi.io.synth
from stemroi.models import weights as stemroi_weights


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few patches, 64x64 network input instead of 224")
    parser.add_argument("--data", action="store_true", help="use the real CdTe patches instead of synthetic ones")
    parser.add_argument("--weights", help="default: imagenet-keras if cached, else random (untrained)")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_vgg16_"))
    out.mkdir(parents=True, exist_ok=True)
    weights = args.weights or ("imagenet-keras" if stemroi_weights.weights_path("imagenet-keras").exists() else "random")
    if args.data:
        root = Path(os.environ.get("STEMROI_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
        ds = stemroi.load_patch_folder(root / "ayyubi-stem-defects" / "CdTe")
        patches, labels, names = ds.patches, ds.labels, ds.class_names
    else:
        patches, labels, names = stemroi.io.synth.make_patch_dataset(
            n_per_class=12 if args.quick else 50, classes=["Bulk", "vacancy", "stacking_fault"], random_state=0)

    extractor = stemroi.VGG16Features(weights=weights, input_size=64 if args.quick else 224, random_state=0)
    X = extractor.transform(patches)
    Z = stemroi.PCA(n_components=10, random_state=0).fit_transform(X)
    clusters = stemroi.KMeans(n_clusters=len(names), n_init=4, random_state=0).fit_predict(Z)
    acc = stemroi.cluster_accuracy(labels, clusters)
    print(f"weights {weights!r}{' (untrained: a baseline only)' if weights == 'random' else ''}: "
          f"{len(patches)} patches -> features {X.shape}; K-means (k={len(names)}) accuracy {acc:.3f}")

    image = stemroi.io.synth.make_image((256, 256), defects={"stacking_fault": 1}, random_state=1).image
    tile_features, origins = stemroi.features.extract_image_features(image, extractor, patch_size=64, stride=64)
    print(f"image {image.shape}: {len(origins)} tiles -> features {tile_features.shape}")
    np.savez_compressed(out / "features.npz", features=X, labels=labels, tile_features=tile_features, origins=origins)
    summary = {"weights": weights, "feature_shape": list(X.shape), "tile_feature_shape": list(tile_features.shape),
               "cluster_accuracy": acc, "class_names": list(names)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
