#!/usr/bin/env bash
# Build the core, its C++ tests and the Python module with AddressSanitizer +
# UndefinedBehaviorSanitizer (STEMROI_SANITIZE=ON) into build-asan/, run ctest
# under them, then a fast pytest subset against the instrumented module.
#
#   scripts/sanitize.sh                 build + ctest + pytest subset
#   SANITIZE_PYTEST="tests/a.py ..."    the pytest files ("" skips pytest)
#   SANITIZE_CTEST_ARGS="-R ModelFile"  extra ctest arguments
#   scripts/sanitize.sh --fast          only the torch-free core and its tests, one
#                                       g++ command (minutes, not the full build)
#
# Findings abort the test that triggered them (-fno-sanitize-recover), so a
# green run means no report. Leak detection is off: LibTorch and CPython keep
# global allocations alive at exit, and those reports would bury real ones.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="$root/build-asan"
py="${STEMROI_PY:-$root/.venv/bin/python}"
pytest_files="${SANITIZE_PYTEST-tests/test_patches.py tests/test_model_file.py tests/test_preprocess.py}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

t0=$SECONDS
if [ "${1:-}" = "--fast" ]; then
  # The parts of the core that need no LibTorch headers beyond ATen/Parallel.h
  # (parallel.cpp), with their GoogleTest files: an update here when a file of
  # these areas is added or moved.
  mkdir -p "$build/fast"
  src=cpp/src; tst=cpp/tests
  files=($src/patches.cpp $src/overlap.cpp $src/filters.cpp $src/cluster_metrics.cpp $src/preprocess.cpp
         $src/parallel.cpp $src/model_file.cpp $src/sha256.cpp $src/kmeans.cpp $src/silhouette.cpp $src/pca.cpp
         $src/linkage.cpp
         $src/compute_device.cpp
         $tst/test_patches.cpp $tst/test_overlap.cpp $tst/test_common.cpp $tst/test_preprocess.cpp
         $tst/test_model_file.cpp $tst/test_numeric.cpp)
  flags=(-std=c++17 -O1 -g1 -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=undefined
         -fno-omit-frame-pointer -DEIGEN_DONT_PARALLELIZE -Icpp/include -isystem /usr/include/eigen3
         -isystem /usr/include/torch/csrc/api/include)
  # one object per file, CMAKE_BUILD_PARALLEL_LEVEL at a time, then one link
  # objects named <dir>_<file>.o (src/ and tests/ share some file names)
  objs=()
  for f in "${files[@]}"; do objs+=("$build/fast/$(basename "$(dirname "$f")")_$(basename "${f%.cpp}").o"); done
  printf '%s\n' "${files[@]}" | nice -n 10 xargs -P "$CMAKE_BUILD_PARALLEL_LEVEL" -I{} bash -c \
    'f="$1"; shift; g++ "$@" -c "$f" -o "$0/$(basename "$(dirname "$f")")_$(basename "${f%.cpp}").o"' \
    "$build/fast" {} "${flags[@]}"
  g++ "${flags[@]}" "${objs[@]}" -o "$build/stemroi_fast_tests" -lgtest -lgtest_main -ltorch -ltorch_cpu -lc10 -pthread
  t_build=$((SECONDS - t0))
  t1=$SECONDS
  "$build/stemroi_fast_tests"
  echo "sanitize.sh --fast: build ${t_build} s, tests $((SECONDS - t1)) s"
  exit 0
fi
if [ ! -f "$build/build.ninja" ]; then
  mkdir -p "$build"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTEMROI_SANITIZE=ON \
    -DSTEMROI_BUILD_TESTS=ON -DSTEMROI_BUILD_PYTHON=ON -DPython_EXECUTABLE="$py" \
    -DPYBIND11_FINDPYTHON=ON >"$build/configure.log" 2>&1 || { tail -30 "$build/configure.log"; exit 1; }
fi
# The C++ tests first: their results do not wait for the Python module.
nice -n 10 cmake --build "$build" --target stemroi_cpp_tests
t_build=$((SECONDS - t0))

t1=$SECONDS
# shellcheck disable=SC2086
ctest --test-dir "$build" -j2 --output-on-failure --timeout 900 ${SANITIZE_CTEST_ARGS:-}
t_ctest=$((SECONDS - t1))

t_py=0
if [ -n "$pytest_files" ]; then
  t2=$SECONDS
  nice -n 10 cmake --build "$build" --target _core
  t_build=$((t_build + SECONDS - t2))
  t2=$SECONDS
  so="$(ls "$build"/cpp/_core*.so)"
  # CPython is not instrumented: the ASan runtime must be loaded first, and
  # libstdc++ with it (else ASan's __cxa_throw interceptor finds no real
  # __cxa_throw and aborts at the first C++ exception).
  libasan="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
  # The editable install's import hook would load build/'s module: put one
  # in front of it that maps stemroi._core to the instrumented build.
  # shellcheck disable=SC2086
  LD_PRELOAD="$libasan" STEMROI_ASAN_CORE="$so" "$py" - $pytest_files <<'PYEOF'
import importlib.util
import os
import sys


class _AsanCore:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "stemroi._core":
            return importlib.util.spec_from_file_location(name, os.environ["STEMROI_ASAN_CORE"])
        return None


sys.meta_path.insert(0, _AsanCore)
import pytest  # noqa: E402

# ASan's quarantine and shadow memory inflate the resident set: the tests that
# bound RSS measure the sanitizer, not stemroi.
# --capture=sys: a sanitizer report is written to fd 2 and the process exits;
# with pytest's default fd capture the report would vanish with it.
rc = pytest.main(["-q", "-p", "no:randomly", "--capture=sys", "-k", "not rss", *sys.argv[1:]])
import stemroi._core  # noqa: E402

assert stemroi._core.__file__ == os.environ["STEMROI_ASAN_CORE"], stemroi._core.__file__
sys.exit(rc)
PYEOF
  t_py=$((SECONDS - t2))
fi
echo "sanitize.sh: build ${t_build} s, ctest ${t_ctest} s, pytest ${t_py} s (total $((SECONDS - t0)) s wall)"
