#!/usr/bin/env bash
# Build zcloop against several liburing releases and run tests against each.
#
# For each release tag: export liburing's sources from a git repository
# (`git archive`, no network needed when LIBURING_GIT is a local clone or
# mirror), build it into its own prefix, copy this checkout (tracked and
# untracked, not ignored files: no .so, no generated _ring.c) to a scratch
# directory, build zcloop there with LIBURING_PREFIX=<prefix> and run pytest
# in that copy.  The worktree's own in-place build is never touched.
#
#   scripts/test-liburing.sh                  # 2.3 2.4 2.5 2.7 and the newest tag
#   scripts/test-liburing.sh 2.3 2.15         # just these
#   TESTS=all scripts/test-liburing.sh        # the full suite for each (default: core subset)
#   LIBURING_GIT=/path/to/liburing/.git WORK=/tmp/zl scripts/test-liburing.sh
#
# TESTS (default "core"): the files whose code paths depend on liburing's
# inline helpers and struct layouts (ring setup, every prep_* used, provided
# buffer rings, SEND_ZC, splice/sendfile, cancel, the fallback probe); about a
# third of the full suite's time.  TESTS=all runs everything; any other value
# is passed to pytest as is.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

LIBURING_GIT=${LIBURING_GIT:-/work/.mirror/axboe+liburing/repo}
WORK=${WORK:-${TMPDIR:-/tmp}/zcloop-liburing}
PYTHON=${PYTHON:-python3}
TESTS=${TESTS:-core}
CORE_TESTS="tests/test_core_features.py tests/test_core_run.py tests/test_core_close.py
  tests/test_core_fd.py tests/test_streams.py tests/test_streams_zc.py tests/test_udp.py
  tests/test_sendfile.py tests/test_servers.py tests/test_fallback.py tests/test_degraded.py
  tests/test_badinput.py tests/test_pool.py"

if ! git --git-dir="$LIBURING_GIT" rev-parse -q --verify HEAD >/dev/null 2>&1 &&
   ! git --git-dir="$LIBURING_GIT" tag | grep -q .; then
    echo "no liburing git repository at LIBURING_GIT=$LIBURING_GIT" >&2
    echo "(a bare clone of liburing's repository, axboe/liburing: LIBURING_GIT=<dir>)" >&2
    exit 2
fi
newest=$(git --git-dir="$LIBURING_GIT" tag -l 'liburing-*' | grep -v -- -rc | sort -V | tail -n 1)
if [ $# -gt 0 ]; then versions=("$@"); else versions=(2.3 2.4 2.5 2.7 "${newest#liburing-}"); fi
case $TESTS in
    core) test_args=($CORE_TESTS) ;;
    all) test_args=(tests) ;;
    *) test_args=($TESTS) ;;
esac

mkdir -p "$WORK"
jobs=$(nproc 2>/dev/null || echo 2)
summary=()
failed=0
for v in "${versions[@]}"; do
    tag=liburing-$v
    base=$WORK/$v
    prefix=$base/prefix
    echo "=== liburing $v"
    if [ ! -f "$prefix/include/liburing.h" ]; then
        rm -rf "$base/src" && mkdir -p "$base/src"
        if ! git --git-dir="$LIBURING_GIT" archive "$tag" | tar -x -C "$base/src"; then
            summary+=("$v | no | - | tag $tag not found"); failed=1; continue
        fi
        if ! (cd "$base/src" && ./configure --prefix="$prefix" >"$base/configure.log" 2>&1 &&
              make -j"$jobs" -C src >"$base/make.log" 2>&1 &&
              make install >"$base/install.log" 2>&1); then
            summary+=("$v | no | - | liburing build failed (see $base/*.log)"); failed=1; continue
        fi
    fi
    tree=$base/zcloop
    rm -rf "$tree" && mkdir -p "$tree"
    (cd "$SRC" && git ls-files -z -c -o --exclude-standard | tar --null -T - -c) | tar -x -C "$tree"
    if ! (cd "$tree" && LIBURING_PREFIX=$prefix "$PYTHON" setup.py -q build_ext --inplace \
            >"$base/zcloop-build.log" 2>&1); then
        summary+=("$v | no | - | zcloop build failed (see $base/zcloop-build.log)"); failed=1; continue
    fi
    # The liburing the extension was built against, as its headers said.
    linked=$(grep -h -E '^#define IO_URING_VERSION_(MAJOR|MINOR)' \
             "$prefix/include/liburing/io_uring_version.h" 2>/dev/null | awk '{print $3}' | paste -sd.)
    start=$(date +%s)
    (cd "$tree" && PYTHONPATH=$tree "$PYTHON" -m pytest -q -ra --timeout=300 -p no:cacheprovider \
        "${test_args[@]}" >"$base/pytest.log" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - start ))
    result=$(tail -n 1 "$base/pytest.log" | sed 's/=//g; s/^ *//; s/ *$//')
    if [ $rc -eq 0 ]; then
        summary+=("$v | yes | passed | $result (${secs}s; version header: ${linked:-none, pre-2.4})")
    else
        summary+=("$v | yes | FAILED | $result (${secs}s; see $base/pytest.log)"); failed=1
    fi
    rm -rf "$tree/build"
done

echo
echo "liburing | built | tests | details   [TESTS=$TESTS, $($PYTHON -c 'import sys; print(sys.version.split()[0])'), $(uname -r)]"
printf '%s\n' "${summary[@]}"
exit $failed
