#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (ctest). Extra arguments go to ctest.
#
#   scripts/test.sh [--sanitize address|thread] [ctest arguments...]
#
# --sanitize address: a clang build with AddressSanitizer and
#   UndefinedBehaviorSanitizer in build-asan/ (-O1, line tables, the examples
#   and benchmarks off), with clang's -Wthread-safety findings as errors; runs
#   the unit, multi-process and durability tests (ctest labels below) unless
#   ctest arguments choose others.
# --sanitize thread: a clang build with ThreadSanitizer in build-tsan/; runs
#   the tests of async saves, the manager, the Envs and the multi-process
#   collectives. LibTorch, TBB and Gloo are not instrumented:
#   tests/sanitizers/tsan.supp says what that hides.
# DCP_BUILD_DIR overrides the build directory, DCP_JOBS the parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."

SANITIZE=""
if [ "${1:-}" = "--sanitize" ]; then
  SANITIZE=${2:?"--sanitize takes address or thread"}
  shift 2
elif [[ "${1:-}" == --sanitize=* ]]; then
  SANITIZE=${1#--sanitize=}
  shift
fi

JOBS=${DCP_JOBS:-2}
case "$SANITIZE" in
  "")
    ./scripts/build.sh
    exec ctest --test-dir "${DCP_BUILD_DIR:-build}" --output-on-failure -j "$JOBS" "$@"
    ;;
  address)
    FLAGS=address,undefined
    BUILD_DIR=${DCP_BUILD_DIR:-build-asan}
    # Unit tests of the core, the manager and the integrations; multi-process
    # tests over Gloo; power cuts, full disks and forced saves; the readers of
    # PyTorch's formats (parsers of files from elsewhere). Not the kill tests
    # (dcp_manager_crash_test) or the fixture round trips: minutes of Python
    # and SIGKILL, little of our code that the others do not run.
    LABELS='^(sanitizers|dcp_core_test|dcp_core_internal_test|dcp_manager_test|dcp_integrations_test|dcp_libtorch_test|dcp_trainer_test|dcp_multiproc_test|dcp_manager_multiproc_test|dcp_durability_test|dcp_durability_multiproc_test|dcp_interop_read_test|dcp_interop_bad_input_test|dcp_interop_libtorch_test|dcp_interop_write_test|dcp_interop_python_reader_test)$'
    # Only those binaries are built (not ckpt, the examples or the others).
    TARGETS="--target $(tr '|' ' ' <<<"${LABELS:2:-2}" | sed 's/^sanitizers //')"
    ;;
  thread)
    FLAGS=thread
    BUILD_DIR=${DCP_BUILD_DIR:-build-tsan}
    # The async saver, the Envs and the manager (unit), the collectives and
    # the manager over real ranks.
    LABELS='^(dcp_core_test|dcp_manager_test|dcp_multiproc_test|dcp_manager_multiproc_test)$'
    TARGETS="--target dcp_core_test dcp_manager_test dcp_multiproc_test dcp_manager_multiproc_test"
    ;;
  *)
    echo "test.sh: --sanitize takes address or thread, not '$SANITIZE'" >&2
    exit 2
    ;;
esac

DCP_INSTALL_SANITIZER_TOOLS=1 ./scripts/install-deps.sh
SAN_DIR=$PWD/tests/sanitizers
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
    -DDCP_SANITIZE=$FLAGS -DDCP_WERROR_THREAD_SAFETY=ON \
    -DDCP_BUILD_EXAMPLES=OFF -DDCP_BUILD_BENCHMARKS=OFF -DDCP_INSTALL=OFF
fi
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j "$JOBS" $TARGETS

# halt_on_error / abort: a report fails the test that made it.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$SAN_DIR/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$SAN_DIR/ubsan.supp:${UBSAN_OPTIONS:-}"
export TSAN_OPTIONS="suppressions=$SAN_DIR/tsan.supp:halt_on_error=1:second_deadlock_stack=1:print_suppressions=0:${TSAN_OPTIONS:-}"
if [ $# -eq 0 ]; then
  set -- -L "$LABELS"
fi
exec ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" "$@"
