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

_PROBE = r"""
import sys
import h5py

def limit_memory(extra):
    try:
        import resource
        with open("/proc/self/status") as fh:
            vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration, ValueError):
        return  # not Linux: the timeout still holds
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))

def is_memory(exc):
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "memory allocation failed" in text or "out of memory" in text \
        or "unable to allocate" in text or "can't allocate" in text

failed = False
def attempt(fn, *args):
    global failed
    try:
        return fn(*args)
    except Exception as exc:
        if is_memory(exc):
            print(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, file=sys.stderr)
            sys.exit(MEMORY_EXIT)
        failed = True

def read_attrs(obj):
    for key in attempt(lambda: list(obj.attrs.keys())) or ():
        attempt(obj.attrs.get, key)

def walk(group, seen, depth):
    read_attrs(group)
    for key in attempt(lambda: list(group.keys())) or ():
        obj = attempt(group.get, key)
        token = None if obj is None else attempt(hash, obj)  # the object's file and address
        if token is None or token in seen or depth > 64 or len(seen) > 100000:
            continue
        seen.add(token)
        if isinstance(obj, h5py.Group):
            walk(obj, seen, depth + 1)
        elif isinstance(obj, h5py.Dataset):
            attempt(lambda: (obj.shape, obj.dtype, obj.chunks, obj.id.get_storage_size()))
            read_attrs(obj)

path, MEMORY_EXIT, extra, reader = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if reader:
    import importlib
    module, _, function = reader.partition(":")
    read = getattr(importlib.import_module(module), function)
limit_memory(extra)
if reader:
    attempt(read, path)
else:
    fh = attempt(h5py.File, path, "r")
    if fh is not None:
        walk(fh, set(), 0)
        attempt(fh.close)
sys.exit(1 if failed else 0)
"""


def probe(path: "os.PathLike[str] | str", timeout: Optional[float] = None,
          reader: Optional[str] = None) -> Optional[str]:
    """None when the HDF5 file at ``path`` is safe to read in this process, else why it is not
    (a phrase to follow the file's name). ``reader``: ``"module:function"`` called with the path in
    the child (the in-process reader's own lookups reach other parts of a file than a walk)."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    # one BLAS thread: OpenBLAS reserves address space per thread when numpy loads
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        child = subprocess.run([sys.executable, "-c", _PROBE, os.fspath(Path(path)), str(_MEMORY_EXIT),
                                str(PROBE_MEMORY), reader or ""],
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
