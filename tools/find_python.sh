#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 for the bootstrap (megatron-core 0.19 needs it): $PYTHON
# when set, else the first of python3.12 / python3 / python3.13 on PATH, else pyenv's installed
# versions (3.12 first: the tested one, then newer). Exits 2 with what to install when there is none.
set -euo pipefail

MIN_MINOR=12

is_recent() {
    "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, $MIN_MINOR) else 1)" 2>/dev/null
}

if [ -n "${PYTHON:-}" ]; then
    if is_recent "$PYTHON"; then
        command -v "$PYTHON"
        exit 0
    fi
    echo "PYTHON=$PYTHON is not a Python >= 3.$MIN_MINOR (megatron-core 0.19 needs it);" \
        "point PYTHON at one, or unset it to search PATH and pyenv" >&2
    exit 2
fi

for candidate in python3.12 python3 python3.13; do
    if command -v "$candidate" >/dev/null 2>&1 && is_recent "$candidate"; then
        command -v "$candidate"
        exit 0
    fi
done

pyenv_root="${PYENV_ROOT:-}"
if [ -z "$pyenv_root" ] && command -v pyenv >/dev/null 2>&1; then
    pyenv_root="$(pyenv root)"
fi
# HOME may be unset in a bare CI environment: the user's home from the password database then.
home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
pyenv_root="${pyenv_root:-${home}/.pyenv}"
if [ -d "$pyenv_root/versions" ]; then
    # Plain CPython versions (3.12.1, 3.13.0), not virtualenvs or other builds: the newest 3.12
    # first, then newer minors, newest first.
    while IFS= read -r version; do
        candidate="$pyenv_root/versions/$version/bin/python3"
        if [ -x "$candidate" ] && is_recent "$candidate"; then
            echo "$candidate"
            exit 0
        fi
    done < <(find "$pyenv_root/versions" -mindepth 1 -maxdepth 1 -printf '%f\n' \
        | grep -E '^3\.[0-9]+\.[0-9]+$' \
        | awk -F. '{ print ($2 == 12 ? 0 : 1), $0 }' | sort -k1,1n -k2,2Vr | cut -d' ' -f2)
fi

cat >&2 <<MSG
No Python >= 3.$MIN_MINOR found (megatron-core 0.19 needs it). Install one, then run make again:
  Debian 13 / Ubuntu 24.04:  sudo apt-get install python3 python3-venv
  with pyenv:                pyenv install 3.12
or point the bootstrap at one: make test PYTHON=/path/to/python3.12
MSG
exit 2
