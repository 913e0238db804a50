#!/usr/bin/env bash
# The GPU checks, in one call on a lent CUDA machine (the workplace's `device`
# tool; any Linux machine with a GPU, nvcc and a CUDA torch will do):
#   1. build the CUDA core, _core and the C++ tests against that python's torch
#      (scripts/build_cuda.sh, sm_90 only unless TORCH_CUDA_ARCH_LIST says more);
#   2. the C++ GPU tests (ctest), the CUDA kernels' tests under compute-sanitizer
#      memcheck, the Python device tests (tests/test_cuda.py, tests/test_device.py);
#      if those fail, once more with TF32 off, to tell TF32 rounding from a bug;
#   3. benchmarks/gpu.py (parity and speed against torchvision on the same GPU);
#   4. with time left (STEMROI_DEVICE_BUDGET seconds in all, default 480): the whole ctest.
# Logs go to $OUT (default ./gpu_out). Needs on the machine: python3 with a CUDA
# torch, torchvision, pybind11, pytest, scikit-learn, cmake, ninja, nvcc. Eigen
# and GoogleTest are taken from ./.devcarry/{eigen,googletest} when the machine
# lacks them; the CdTe frame from STEMROI_DATA_DIR (default ./.devcarry/data).
#   bash scripts/device_gpu.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/gpu_out}"
mkdir -p "$out"
t0=$(date +%s)
budget="${STEMROI_DEVICE_BUDGET:-480}"
elapsed() { echo $(( $(date +%s) - t0 )); }
say() { echo "[device_gpu $(elapsed)s] $*"; }
status=0
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE

py="${STEMROI_CUDA_PYTHON:-$(command -v python3)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$out/gpu.txt"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$nvcc")")}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
carry="$root/.devcarry"
if [ ! -f /usr/include/eigen3/Eigen/Dense ] && [ -d "$carry/eigen" ]; then
  export Eigen3_ROOT="$carry/eigen"
  say "Eigen from $Eigen3_ROOT"
fi
gtest_config="$(ls /usr/lib/*/cmake/GTest/GTestConfig.cmake /usr/lib/cmake/GTest/GTestConfig.cmake \
  /usr/local/lib*/cmake/GTest/GTestConfig.cmake 2>/dev/null | head -n 1)"
if [ -z "$gtest_config" ] && [ -d "$carry/googletest" ]; then
  say "building GoogleTest from $carry/googletest"
  cmake -S "$carry/googletest" -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
    -DCMAKE_INSTALL_PREFIX=/tmp/gtest -DCMAKE_POSITION_INDEPENDENT_CODE=ON >"$out/gtest.log" 2>&1 &&
    cmake --build /tmp/gtest-build --target install >>"$out/gtest.log" 2>&1 || { say "GoogleTest build failed"; tail -20 "$out/gtest.log"; }
  export GTest_ROOT=/tmp/gtest
fi

echo "c++: $(c++ --version | head -n 1); libstdc++.so: $(c++ -print-file-name=libstdc++.so); libstdc++.so.6: $(c++ -print-file-name=libstdc++.so.6)"
say "1. build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, $(nproc) jobs)"
export STEMROI_CUDA_PYTHON="$py" STEMROI_CUDA_BUILD="$root/build-cuda"
bash scripts/build_cuda.sh >"$out/build.log" 2>&1
brc=$?
grep -E "^build_cuda|stemroi: .*libstdc|libstdc" "$out/build.log"
pkg="$root/build-cuda/pylib"
tests_bin="$(find "$root/build-cuda" -name stemroi_cpp_tests -type f | head -n 1)"
if [ -z "$tests_bin" ] || ! ls "$pkg"/stemroi/_core*.so >/dev/null 2>&1; then
  grep -E "error" "$out/build.log" | head -40
  tail -30 "$out/build.log"
  say "build FAILED"
  exit 1
fi
[ "$brc" = 0 ] || { status=1; say "built, but build_cuda.sh's import check failed (rc $brc): probed below"; }

say "2a. C++ GPU tests"
ctest --test-dir "$root/build-cuda" -R 'Cuda|Device' -j 8 --timeout 300 --output-on-failure >"$out/ctest_gpu.log" 2>&1 || status=1
grep -E "tests passed|Failed|\*\*\*|Not Run|Skipped" "$out/ctest_gpu.log" | head -30

say "2b. compute-sanitizer memcheck on the CUDA kernels' tests"
if command -v compute-sanitizer >/dev/null; then
  timeout 90 compute-sanitizer --tool memcheck --error-exitcode 3 --leak-check no "$tests_bin" \
    --gtest_filter='CudaNumeric*' >"$out/memcheck.log" 2>&1
  rc=$?
  tail -4 "$out/memcheck.log"
  say "memcheck rc=$rc (0 clean, 3 errors found, 124 timed out)"
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || status=1
fi

say "2c. import probe"
probe='import faulthandler; faulthandler.enable()
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), flush=True)
import stemroi._core as c; print("_core loaded; cuda_built", c.cuda_built, flush=True)
print("cuda_device_count", c.cuda_device_count(), flush=True)
import stemroi; print("stemroi imported", flush=True)
import sklearn, scipy.optimize, PIL.Image, matplotlib; print("sklearn, scipy, PIL, matplotlib imported", flush=True)'
import_ok=1
if ! PYTHONPATH="$pkg" timeout 120 "$py" -c "$probe" >"$out/probe.log" 2>&1; then
  status=1 import_ok=0
  head -c 6000 "$out/probe.log"
  if command -v cuda-gdb >/dev/null; then
    say "native backtrace (cuda-gdb)"
    PYTHONPATH="$pkg" timeout 100 cuda-gdb -q -batch -ex run -ex bt -ex "info sharedlibrary" --args "$py" -c "$probe" \
      >"$out/gdb.log" 2>&1
    grep -E "^#|SIGSEGV|signal" "$out/gdb.log" | head -40
  fi
  for variant in "CUDA_VISIBLE_DEVICES=" "LD_PRELOAD=$(ls /usr/lib/x86_64-linux-gnu/libgomp.so.1 2>/dev/null)"; do
    env "$variant" PYTHONPATH="$pkg" timeout 60 "$py" -c "$probe" >"$out/probe_variant.log" 2>&1
    echo "  variant $variant: rc $? :: $(tr '\n' '|' <"$out/probe_variant.log" | tail -c 300)"
  done
  PYTHONPATH="$pkg" timeout 60 "$py" -X faulthandler -c 'import sys; sys.path.insert(0, "'"$pkg"'/stemroi"); import torch
import importlib.util, glob
spec = importlib.util.spec_from_file_location("_core", glob.glob("'"$pkg"'/stemroi/_core*.so")[0])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print("bare _core ok", m.cuda_device_count())' 2>&1 | tail -8
fi
cat "$out/probe.log" | head -8

if [ "$import_ok" = 0 ]; then say "stemroi does not import: no Python tests, no benchmark"; exit 1; fi

say "2d. Python device tests"
pytest_gpu() {
  PYTHONPATH="$pkg${1:+:$1}" "$py" -m pytest tests/test_cuda.py tests/test_device.py -q -rs -o cache_dir=/tmp/pc \
    -p no:randomly 2>&1
}
pytest_gpu >"$out/pytest_gpu.log"
prc=$?
tail -25 "$out/pytest_gpu.log"
if [ "$prc" != 0 ]; then
  status=1
  say "again with TF32 off (cuDNN and cuBLAS), to tell rounding from a bug"
  mkdir -p /tmp/tf32off && printf 'import torch\ntorch.backends.cudnn.allow_tf32 = False\ntorch.backends.cuda.matmul.allow_tf32 = False\n' >/tmp/tf32off/sitecustomize.py
  pytest_gpu /tmp/tf32off >"$out/pytest_gpu_tf32off.log"
  tail -8 "$out/pytest_gpu_tf32off.log"
fi

say "3. benchmarks/gpu.py"
(cd benchmarks && STEMROI_DATA_DIR="${STEMROI_DATA_DIR:-$carry/data}" PYTHONPATH="$pkg" \
  timeout $(( budget - $(elapsed) > 60 ? budget - $(elapsed) : 60 )) "$py" gpu.py 2>&1) | tee "$out/gpu_bench.log" | grep -v "^\s*$"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

left=$(( budget - $(elapsed) ))
if [ "$left" -gt 90 ]; then
  say "4. the whole ctest ($left s left)"
  timeout "$left" ctest --test-dir "$root/build-cuda" -j 16 --timeout 120 >"$out/ctest_all.log" 2>&1 || status=1
  grep -E "tests passed|Failed|\*\*\*|Timeout" "$out/ctest_all.log" | head -20
fi
say "done, status $status"
exit $status
