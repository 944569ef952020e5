# Sourced by scripts/test-versions.sh and scripts/build-wheels.sh: find_python 3.X
# prints the newest 3.X.Y under pyenv (PYENV_ROOT, default ~/.pyenv), else python3.X on PATH.
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}

find_python() {
    # Newest 3.X.Y under pyenv (not free-threaded "3.X.Yt" builds), else PATH.
    local minor=$1 dir
    if [ -d "$PYENV_ROOT/versions" ]; then
        dir=$(ls "$PYENV_ROOT/versions" 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" \
              | sort -t. -k3,3n | tail -n 1)
        if [ -n "$dir" ] && [ -x "$PYENV_ROOT/versions/$dir/bin/python3" ]; then
            echo "$PYENV_ROOT/versions/$dir/bin/python3"
            return
        fi
    fi
    command -v "python$minor" 2>/dev/null || true
}
