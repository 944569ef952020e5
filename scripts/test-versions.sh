#!/usr/bin/env bash
# Build zcloop and run its whole test suite on each CPython 3.11-3.14 found:
# the newest pyenv install of each minor version ($PYENV_ROOT/versions/3.X.Y),
# else python3.X on PATH.  Absent versions are skipped with a message.
#
# Each version gets its own venv, .venvs/py3.X, with the test extras and an
# editable install of this checkout; `make build` then builds the extension in
# place (zcloop/_ring.cpython-3X-*.so, one per version, side by side).
#
#   scripts/test-versions.sh              # every version found
#   scripts/test-versions.sh 3.12 3.13    # just these
#   PYTEST_ARGS="-x -k udp" scripts/test-versions.sh
set -uo pipefail
cd "$(dirname "$0")/.."

PYTEST_ARGS=${PYTEST_ARGS:--q -ra --timeout=300}
if [ $# -gt 0 ]; then versions=("$@"); else versions=(3.11 3.12 3.13 3.14); fi

. scripts/find-python.sh      # find_python 3.X (after the cd to the checkout)

summary=()
failed=0
ran=0
for minor in "${versions[@]}"; do
    py=$(find_python "$minor")
    if [ -z "$py" ]; then
        echo "=== Python $minor: not found (no pyenv $minor.x, no python$minor on PATH), skipped"
        summary+=("$minor: skipped (not installed)")
        continue
    fi
    venv=.venvs/py$minor
    echo "=== Python $minor: $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" || { summary+=("$minor: FAILED (venv)"); failed=1; continue; }
    fi
    if ! "$venv/bin/python" -c 'import pytest, pytest_timeout, hypothesis, zcloop' 2>/dev/null; then
        "$venv/bin/python" -m pip install -q -U pip &&
            "$venv/bin/python" -m pip install -q -e '.[test]' ||
            { summary+=("$minor: FAILED (pip install)"); failed=1; continue; }
    fi
    if ! make -s build PYTHON="$venv/bin/python"; then
        summary+=("$minor: FAILED (build)")
        failed=1
        continue
    fi
    ran=$((ran + 1))
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pytest $PYTEST_ARGS tests
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        summary+=("$minor: passed (${secs}s)")
    else
        summary+=("$minor: FAILED (pytest exit $rc, ${secs}s)")
        failed=1
    fi
done

echo "=== Summary"
printf '%s\n' "${summary[@]}"
if [ $ran -eq 0 ] && [ $failed -eq 0 ]; then
    echo "no Python of ${versions[*]} found"
    exit 1
fi
exit $failed
