#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing (scripts/setup.sh), build
# (scripts/build.sh), run every CTest test (unit, multi-rank, multi-process, C API, install;
# label gpu only where a GPU is present), then the Python package's tests in .venv.
# Exits non-zero when anything failed; the last line is "tests: N passed, N failed, N skipped".
#   OBCCL_BUILD_DIR     build folder (default build)
#   OBCCL_TEST_JOBS     tests run in parallel (default 2)
#   OBCCL_TEST_TIMEOUT  seconds per CTest test without its own limit (default 300)
#   OBCCL_SKIP_PYTHON=1 skip the Python tests (they install torch from PyPI the first time)
#   OBCCL_SKIP_FUZZ=1   skip the fuzz corpus replay (scripts/fuzz.sh replay; a clang ASan build)
#   OBCCL_TEST_SANITIZERS=1  also run scripts/sanitize.sh asan --quick and tsan --quick (two more
#                       full builds: about doubles the run time on 2 cores, so not by default)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${OBCCL_BUILD_DIR:-build}
JOBS=${OBCCL_TEST_JOBS:-2}
TIMEOUT=${OBCCL_TEST_TIMEOUT:-300}
LOG_DIR="$BUILD_DIR/test-logs"

passed=0 failed=0 skipped=0 stage_failures=()

stage() { echo; echo "== $*"; }

run_setup_and_build() {
  stage "setup"
  bash scripts/setup.sh || { stage_failures+=(setup); return 1; }
  stage "build"
  bash scripts/build.sh || { stage_failures+=(build); return 1; }
}

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

run_ctest() {
  local args=(--test-dir "$BUILD_DIR" --output-on-failure --timeout "$TIMEOUT" -j "$JOBS")
  if have_gpu; then
    stage "ctest (GPU present: label gpu included)"
  else
    stage "ctest (no GPU: label gpu excluded)"
    args+=(-LE gpu)
  fi
  local log="$LOG_DIR/ctest.log"
  ctest "${args[@]}" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # "97% tests passed, 1 tests failed out of 40"; skipped tests are listed as "(Skipped)".
  local summary total fail=0 skip
  summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  if [[ -n $summary ]]; then
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
    fail=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$summary")
    skip=$(grep -cE '\(Skipped\)$' "$log" || true)
    passed=$((passed + total - fail - skip))
    failed=$((failed + fail))
    skipped=$((skipped + skip))
  elif ! grep -q 'No tests were found' "$log"; then
    stage_failures+=(ctest)
  fi
  # A non-zero exit with no failed test counted (e.g. a test list that could not be made).
  if [[ -n $summary && $rc -ne 0 && $fail -eq 0 ]]; then stage_failures+=(ctest); fi
}

run_python() {
  [[ -f python/requirements-test.txt && ${OBCCL_SKIP_PYTHON:-0} != 1 ]] || return 0
  local lib="$BUILD_DIR/src/api/libobccl.so"
  if [[ ! -e $lib ]]; then
    stage "python tests skipped: $lib is not built"
    return 0
  fi
  stage "python tests (.venv)"
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv || { stage_failures+=(python-venv); return 1; }
  fi
  .venv/bin/pip install -q --disable-pip-version-check -r python/requirements-test.txt ||
    { stage_failures+=(python-install); return 1; }
  local log="$LOG_DIR/pytest.log"
  OBCCL_LIBRARY="$PWD/$lib" PYTHONPATH="$PWD/python" timeout 1500 \
    .venv/bin/python -m pytest -q -p no:cacheprovider python/tests 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -E '[0-9]+ (passed|failed|skipped|errors?)' "$log" | tail -1)
  count() { grep -oE "[0-9]+ $1" <<<"$line" | head -1 | grep -oE '[0-9]+' || echo 0; }
  passed=$((passed + $(count passed)))
  failed=$((failed + $(count failed) + $(count 'errors?')))
  skipped=$((skipped + $(count skipped)))
  # 5: no tests collected, which is not a failure of the suite.
  if [[ $rc -ne 0 && $rc -ne 5 && -z $line ]]; then stage_failures+=(pytest); fi
  if [[ $rc -ne 0 && $rc -ne 5 && -n $line && $(count failed) -eq 0 ]]; then
    stage_failures+=(pytest)
  fi
}

# The libFuzzer targets replay their corpus under ASan and UBSan: one test, passed or failed.
run_fuzz() {
  [[ -f scripts/fuzz.sh && ${OBCCL_SKIP_FUZZ:-0} != 1 ]] || return 0
  stage "fuzz corpus replay (scripts/fuzz.sh replay)"
  local rc=0 line
  timeout 1200 bash scripts/fuzz.sh replay 2>&1 | tee "$LOG_DIR/fuzz.log" || rc=$?
  # "fuzz: 6 passed, 0 failed" counts each target; without it the replay is one failed test.
  line=$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed' "$LOG_DIR/fuzz.log" | tail -1)
  local nfail=0
  if [[ -n $line ]]; then
    passed=$((passed + $(sed -E 's/^fuzz: ([0-9]+) passed.*/\1/' <<<"$line")))
    nfail=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  fi
  if [[ $rc -ne 0 && $nfail -eq 0 ]]; then nfail=1; fi
  failed=$((failed + nfail))
  if [[ $rc -ne 0 ]]; then echo "test.sh: fuzz replay failed (log: $LOG_DIR/fuzz.log)"; fi
}

# The unit and multi-rank suites again under ASan+UBSan and TSan, when asked for.
run_sanitizers() {
  [[ -f scripts/sanitize.sh && ${OBCCL_TEST_SANITIZERS:-0} == 1 ]] || return 0
  local kind log summary total fail skip
  for kind in asan tsan; do
    stage "sanitizers: scripts/sanitize.sh $kind --quick"
    log="$LOG_DIR/sanitize-$kind.log"
    bash scripts/sanitize.sh "$kind" --quick 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
    if [[ -z $summary ]]; then
      stage_failures+=("sanitize-$kind")
      continue
    fi
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
    fail=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$summary")
    skip=$(grep -cE '\(Skipped\)$' "$log" || true)
    passed=$((passed + total - fail - skip))
    failed=$((failed + fail))
    skipped=$((skipped + skip))
    if [[ $rc -ne 0 && $fail -eq 0 ]]; then stage_failures+=("sanitize-$kind"); fi
  done
}

mkdir -p "$LOG_DIR" 2>/dev/null || true
if run_setup_and_build; then
  mkdir -p "$LOG_DIR"
  run_ctest
  run_python
  run_fuzz
  run_sanitizers
fi

echo
if [[ ${#stage_failures[@]} -gt 0 ]]; then
  echo "test.sh: failed stages: ${stage_failures[*]}"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 && ${#stage_failures[@]} -eq 0 ]]
