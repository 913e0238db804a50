#!/usr/bin/env bash
# Build stemroi with its CUDA kernels (STEMROI_WITH_CUDA=ON) against a PyPI
# CUDA torch: the core, the _core module and the C++ tests, into build-cuda/.
# Then check that the module links (ldd) and imports with _core.cuda_built.
# Needs nvcc, not a GPU (GPU tests skip without one).
#   STEMROI_CUDA_PYTHON   python of a venv with a CUDA torch and pybind11 (default: the PyPI lane's .venv-pypi/bin/python)
#   CUDA_HOME             CUDA toolkit with nvcc (default /usr/local/cuda)
#   TORCH_CUDA_ARCH_LIST  GPU generations (default in CMakeLists.txt: 8.0;9.0+PTX)
#   STEMROI_CUDA_BUILD    build directory (default ./build-cuda)
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default: all cores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${STEMROI_CUDA_PYTHON:-$root/.venv-pypi/bin/python}"
cuda="${CUDA_HOME:-/usr/local/cuda}"
build="${STEMROI_CUDA_BUILD:-$root/build-cuda}"
export PATH="$cuda/bin:$PATH"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

[ -x "$cuda/bin/nvcc" ] || { echo "build_cuda: no nvcc at $cuda/bin/nvcc (set CUDA_HOME)" >&2; exit 1; }
"$py" - <<'PY' || { echo "build_cuda: $py has no CUDA torch" >&2; exit 1; }
import torch
assert torch.version.cuda, f"torch {torch.__version__} is a CPU build"
print(f"build_cuda: torch {torch.__version__} (CUDA {torch.version.cuda})")
PY
echo "build_cuda: $("$cuda/bin/nvcc" --version | tail -n 2 | head -n 1)"
torch_prefix="$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
pybind_dir="$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"

# The torch wheel's CUDA libraries (nvidia-* packages), which libtorch_cuda
# finds through its own RPATH at run time; the linker needs them named, or it
# checks libtorch_cuda against older system copies (e.g. the toolkit's libnccl).
nvidia_libs="$(find "$(dirname "$(dirname "$torch_lib")")/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: -)"
rpath_link="-Wl,-rpath-link,$torch_lib${nvidia_libs:+:$nvidia_libs}"

# TorchConfig looks its libraries up on the system paths first: name the
# wheel's, or a system LibTorch (Debian's libtorch-dev) would be linked too.
start=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSTEMROI_WITH_CUDA=ON -DSTEMROI_BUILD_TESTS=ON -DSTEMROI_BUILD_PYTHON=ON \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DTorch_DIR="$torch_prefix/Torch" -Dpybind11_DIR="$pybind_dir" -DPython_EXECUTABLE="$py" \
  -DTORCH_LIBRARY="$torch_lib/libtorch.so" -Dc10_LIBRARY="$torch_lib/libc10.so" \
  -DCMAKE_CUDA_COMPILER="$cuda/bin/nvcc" -DCUDAToolkit_ROOT="$cuda" \
  -DCMAKE_EXE_LINKER_FLAGS="$rpath_link" -DCMAKE_MODULE_LINKER_FLAGS="$rpath_link" \
  -DCMAKE_SHARED_LINKER_FLAGS="$rpath_link"
cmake --build "$build" --target _core stemroi_cpp_tests
echo "build_cuda: configure + build took $(( $(date +%s) - start )) s"

so="$(find "$build/cpp" -maxdepth 1 -name '_core*.so' | head -n 1)"  # the built module, never a pylib/ copy
[ -n "$so" ] || { echo "build_cuda: no _core module under $build" >&2; exit 1; }
echo "build_cuda: $so"
# Python torch loads the wheel's CUDA libraries before stemroi._core: resolve
# ldd's view the same way.
ldd_out="$(LD_LIBRARY_PATH="$torch_lib:$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$so")"
echo "$ldd_out" | grep -E 'torch|c10|cudart|cublas|not found' || true
if echo "$ldd_out" | grep -q 'not found'; then
  echo "build_cuda: unresolved libraries (above)" >&2
  exit 1
fi
echo "$ldd_out" | grep -q 'libtorch_cuda' || { echo "build_cuda: _core does not link libtorch_cuda" >&2; exit 1; }
# A second C++ runtime inside the module (libstdc++.a linked in) crashes at
# import next to torch's: the module must define none of the runtime's locale code.
if nm -D -C --defined-only "$so" 2>/dev/null | grep -q 'std::locale::classic()'; then
  echo "build_cuda: $so carries a static libstdc++ (std::locale defined in it); $(c++ -print-file-name=libstdc++.so)" >&2
  exit 1
fi
echo "$ldd_out" | grep -E 'libstdc\+\+' || true

# Import from a copy of the package next to the CUDA module (never the source tree's).
pkg="$build/pylib"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r "$root/python/stemroi" "$pkg/"
find "$pkg/stemroi" -maxdepth 1 -name '_core*.so' -delete
cp "$so" "$pkg/stemroi/"
PYTHONPATH="$pkg" "$py" - <<'PY'
import torch
import stemroi
from stemroi import _core
assert _core.cuda_built is True, "the module was built without CUDA"
print(f"build_cuda: import ok: stemroi from {stemroi.__file__}, _core.cuda_built={_core.cuda_built}, "
      f"cuda_device_count()={_core.cuda_device_count()}, torch.cuda.is_available()={torch.cuda.is_available()}")
PY
echo "build_cuda: run the C++ tests with: ctest --test-dir $build --output-on-failure"
echo "build_cuda: and the Python tests with: PYTHONPATH=$pkg $py -m pytest tests/test_cuda.py"
