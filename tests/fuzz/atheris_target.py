"""Run one Python fuzz target under atheris (libFuzzer for Python).

    python tests/fuzz/atheris_target.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of fuzz_targets.TARGETS. scripts/fuzz.sh passes the seed
corpus and -max_total_time.
"""
import sys

import atheris

sys.path.insert(0, __import__("os").path.dirname(__file__))
import fuzz_targets  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in fuzz_targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} TARGET [libFuzzer args]; TARGET one of {sorted(fuzz_targets.TARGETS)}")
    name = sys.argv.pop(1)
    with atheris.instrument_imports(include=list(fuzz_targets.INSTRUMENT[name])):
        import stemroi.io  # noqa: F401
        import stemroi.io._readers  # noqa: F401
        import stemroi.io.model_file  # noqa: F401
        import stemroi.models.weights  # noqa: F401
        if name == "read_image":
            import tifffile  # noqa: F401
        elif name == "keras_h5":
            import h5py  # noqa: F401
        elif name == "torch_weights":
            import torch.serialization  # noqa: F401
    if name == "keras_h5":
        from stemroi._hdf5 import limit_address_space
        from stemroi._lib import _core  # noqa: F401  (LibTorch's mappings before the limit, not under it)

        # 2 GiB beyond what is mapped now: resident memory stays well under libFuzzer's 4 GB
        # (see fuzz_targets.keras_h5)
        limit_address_space(2 << 30)
    target = fuzz_targets.TARGETS[name]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
