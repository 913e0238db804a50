"""Read the 768x768 CdTe field of view, tile it 64x64 (stride 64) and prepare VGG16 inputs.

Shows stemroi.read_image, stemroi.io.scale_to_unit, stemroi.PatchGrid and
stemroi.preprocessing.prepare_patches (resize to 224, grey -> 3 channels, Caffe normalisation).
Needs the reference data (<repo>/../shared/data or $STEMROI_DATA_DIR).

    python examples/read_and_tile.py [--quick] [--out DIR]
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import stemroi
from stemroi.io import scale_to_unit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="prepare only the first 16 tiles for the network")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("STEMROI_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    path = data / "ayyubi-stem-defects" / "CdTe_Training_Image.tif"
    if not path.exists():
        sys.exit(f"reference image not found: {path} (set STEMROI_DATA_DIR to the shared/data folder)")
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_tiles_"))
    out.mkdir(parents=True, exist_ok=True)

    image = stemroi.read_image(path)  # float32 stored values 0..255 (RGBA with R=G=B -> channel 0)
    unit = scale_to_unit(image, "dtype", source_dtype=np.uint8)  # networks take [0, 1]
    grid = stemroi.PatchGrid(patch_size=64, stride=64)
    origins, tiles = grid.origins(unit.shape), grid.extract(unit)
    n_net = 16 if args.quick else len(tiles)
    inputs = stemroi.preprocessing.prepare_patches(tiles[:n_net], size=224, preset="caffe")

    print(f"image {image.shape} {image.dtype}, values {image.min():.0f}..{image.max():.0f}")
    print(f"{grid}: {len(tiles)} tiles of {tiles.shape[1:]}, first origins {origins[:3].tolist()}")
    print(f"network input for {n_net} tiles: {inputs.shape} {inputs.dtype}")
    np.savez_compressed(out / "tiles.npz", origins=origins, tiles=tiles)
    summary = {"image_shape": list(image.shape), "n_tiles": len(tiles), "tile_shape": list(tiles.shape[1:]),
               "input_shape": list(inputs.shape)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'tiles.npz'}")


if __name__ == "__main__":
    main()
