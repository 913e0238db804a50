#!/usr/bin/env bash
# Fuzz the parsers: libFuzzer targets of the C++ core (cpp/fuzz/*.cpp, built
# with clang, ASan and UBSan into build-fuzz/) and atheris targets of the
# Python readers (tests/fuzz/fuzz_targets.py). Seeds are generated into a
# temporary folder at each run (tests/fuzz/make_seeds.py), never committed.
#
#   scripts/fuzz.sh [SECONDS]     seconds per target (default 60)
#   FUZZ_TARGETS="fuzz_model_file model_file"  run only these targets
#   FUZZ_OUT=dir                  where crash reproducers and logs go
#                                 (default build-fuzz/out)
#   FUZZ_JOBS=N                   libFuzzer -fork=N for the C++ targets (default 0: one process)
#   FUZZ_SEED=N                   libFuzzer -seed (default: random; make test-reliability uses 1)
#   FUZZ_REPORT_ONLY=1            report findings but exit 0 (a survey run)
#
# Exit status 1 when a target crashed; the reproducer is in FUZZ_OUT/<target>/
# (re-run one with `build-fuzz/cpp/<target> FILE` or
# `python tests/fuzz/atheris_target.py <target> FILE`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-60}"
py="${STEMROI_PY:-$root/.venv/bin/python}"
build="$root/build-fuzz"
out="${FUZZ_OUT:-$build/out}"
cpp_targets=(fuzz_model_file fuzz_cvae_load)
py_targets=(model_file read_image torch_weights keras_h5)
targets=(${FUZZ_TARGETS:-${cpp_targets[*]} ${py_targets[*]}})

want() { local t; for t in "${targets[@]}"; do [[ "$t" == "$1" ]] && return 0; done; return 1; }
need_cpp=0
for t in "${cpp_targets[@]}"; do want "$t" && need_cpp=1; done

if ((need_cpp)); then
  command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 2; }
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
  if [ ! -f "$build/build.ninja" ]; then
    mkdir -p "$build"
    cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSTEMROI_FUZZ=ON -DSTEMROI_BUILD_TESTS=OFF >"$build/configure.log" 2>&1 \
      || { tail -30 "$build/configure.log"; exit 1; }
  fi
  nice -n 10 cmake --build "$build" --target "${cpp_targets[@]}"
fi
if want model_file || want read_image || want torch_weights || want keras_h5; then
  "$py" -c "import atheris" 2>/dev/null || "$py" -m pip install -q --disable-pip-version-check "atheris==3.0.0"
fi

seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
t_seeds=$SECONDS
"$py" tests/fuzz/make_seeds.py "$seeds" >/dev/null
echo "seeds: $((SECONDS - t_seeds)) s"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$out/$t"
  corpus="$out/$t/corpus"  # what the fuzzer found interesting; kept between runs
  mkdir -p "$corpus"
  log="$out/$t/fuzz.log"
  args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$out/$t/" -rss_limit_mb=4096
        -timeout=30 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} "$corpus" "$seeds/$t")
  echo "== $t (${seconds} s)"
  t_target=$SECONDS
  if [[ " ${cpp_targets[*]} " == *" $t "* ]]; then
    [[ "${FUZZ_JOBS:-0}" != 0 ]] && args=(-fork="$FUZZ_JOBS" "${args[@]}")
    # LibTorch's global objects are still reachable at exit: not leaks of the parsers.
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}" \
      "$build/cpp/$t" "${args[@]}" >"$log" 2>&1 && rc=0 || rc=$?
  else
    OMP_NUM_THREADS=1 "$py" tests/fuzz/atheris_target.py "$t" "${args[@]}" >"$log" 2>&1 && rc=0 || rc=$?
  fi
  grep -E "^#[0-9]+[[:space:]]+(DONE|pulse)|^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | tail -3 || true
  echo "   wall time $((SECONDS - t_target)) s"
  if ((rc != 0)); then
    failed+=("$t")
    echo "   CRASH (exit $rc): see $log and $out/$t/"
    grep -m5 -E "ERROR|Uncaught|Traceback|Error:" "$log" || true
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  if [ -n "${FUZZ_REPORT_ONLY:-}" ]; then
    # make test: a finding is reported with its reproducer (docs/reliability.md lists the open
    # ones) but does not fail the run; `make fuzz` and the long runs fail on it
    echo "fuzz.sh: FUZZ_REPORT_ONLY is set: findings reported, exit status 0" >&2
    exit 0
  fi
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds} s each, no crash ($SECONDS s in all)"
