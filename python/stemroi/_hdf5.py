"""Read an HDF5 file in a child process before reading it in this one.

On some corrupt files libhdf5 fails in ways that no check in this process can
stop (both found by fuzzing): it loops forever inside an attribute read, or,
on a local heap whose free list points back at itself (one byte changed in a
12 kB Keras ``.h5``), it allocates a node per turn of the loop until memory
runs out (4.2 GB resident).
The child reads the file under a timeout and an address-space limit, either
with the caller's own reader (``reader="module:function"``, which must need
only h5py and numpy) or, without one, by opening every object and reading
every attribute; a file on which it runs out of time or memory, or dies, is
refused. A child that meets an ordinary error is ignored: the in-process
reader reports that error in its own words.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

#: seconds the child may take before the file is declared corrupt
PROBE_TIMEOUT = 30.0
#: bytes of address space the child may map beyond what it maps after importing h5py
PROBE_MEMORY = 1 << 30

_MEMORY_EXIT = 3


def limit_address_space(extra: int) -> None:
    """RLIMIT_AS at what this process maps now plus ``extra`` bytes (Linux; elsewhere nothing)."""
    try:
        import resource

        with open("/proc/self/status") as fh:
            vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        return  # not Linux: the probe's timeout still holds
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _is_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        s in text for s in ("memory allocation failed", "out of memory", "unable to allocate", "can't allocate"))


class _Child:
    """What the probe's child runs: every call through ``attempt``, which exits at once on a memory
    failure and notes any other error."""

    def __init__(self) -> None:
        self.failed = False

    def attempt(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            if _is_memory(exc):
                print(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, file=sys.stderr)
                sys.exit(_MEMORY_EXIT)
            self.failed = True
            return None

    def read_attrs(self, obj) -> None:
        for key in self.attempt(lambda: list(obj.attrs.keys())) or ():
            self.attempt(obj.attrs.get, key)

    def walk(self, group, seen: set, depth: int) -> None:
        import h5py

        self.read_attrs(group)
        for key in self.attempt(lambda: list(group.keys())) or ():
            obj = self.attempt(group.get, key)
            token = None if obj is None else self.attempt(hash, obj)  # the object's file and address
            if token is None or token in seen or depth > 64 or len(seen) > 100000:
                continue
            seen.add(token)
            if isinstance(obj, h5py.Group):
                self.walk(obj, seen, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                self.attempt(lambda: (obj.shape, obj.dtype, obj.chunks, obj.id.get_storage_size()))
                self.read_attrs(obj)


def _child_main(path: str, extra: int, reader: str) -> int:
    import importlib

    import h5py

    read = None
    if reader:
        module, _, function = reader.partition(":")
        read = getattr(importlib.import_module(module), function)
    limit_address_space(extra)  # after the imports: only the reading counts
    child = _Child()
    if read is not None:
        child.attempt(read, path)
    else:
        fh = child.attempt(h5py.File, path, "r")
        if fh is not None:
            child.walk(fh, set(), 0)
            child.attempt(fh.close)
    return 1 if child.failed else 0


def probe(path: "os.PathLike[str] | str", timeout: Optional[float] = None,
          reader: Optional[str] = None) -> Optional[str]:
    """None when the HDF5 file at ``path`` is safe to read in this process, else why it is not
    (a phrase to follow the file's name). ``reader``: ``"module:function"`` called with the path in
    the child (the in-process reader's own lookups reach other parts of a file than a walk)."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    # one BLAS thread: OpenBLAS reserves address space per thread when numpy loads
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        child = subprocess.run([sys.executable, "-m", __name__, os.fspath(Path(path)), str(PROBE_MEMORY), reader or ""],
                               timeout=timeout, capture_output=True, check=False, env=env)
    except subprocess.TimeoutExpired:
        return f"the HDF5 library did not finish reading it within {timeout:g} s; the file is corrupt (it loops on it)"
    except OSError:  # no interpreter to start (a frozen application): the in-process checks remain
        return None
    if child.returncode == _MEMORY_EXIT:
        detail = child.stderr.decode(errors="replace").strip().splitlines()
        return (f"the HDF5 library needs more than {PROBE_MEMORY >> 30} GiB to read it "
                f"({detail[-1] if detail else 'out of memory'}); the file is corrupt")
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = str(-child.returncode)
        return f"the HDF5 library crashed reading it ({name}); the file is corrupt"
    return None


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
