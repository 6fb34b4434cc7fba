# Sourced by the run scripts: creates (or reuses) .venv with Python 3.11 and installs a
# requirements file and the project (editable) into it. Usage: . scripts/_venv.sh requirements.txt
#
# The install is skipped when the requirements file and pyproject.toml are unchanged since the
# last install into this venv (a stamp file inside the venv), so starting the app again is
# quick. TRANSFER_STUDIO_NO_INSTALL=1 uses the venv as it is (a prepared venv, the tests).
set -euo pipefail
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Transfer Studio needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  echo "Set PYTHON=/path/to/python3.11 and run again." >&2
  exit 2
fi
VENV="${TRANSFER_STUDIO_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ "${TRANSFER_STUDIO_NO_INSTALL:-0}" = "1" ]; then
  return 0 2>/dev/null || exit 0
fi
STAMP="$VENV/.transfer-studio-$(basename "$1").sha256"
WANTED="$(cat "$1" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ]; then
  return 0 2>/dev/null || exit 0
fi
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r "$1"
# The project itself, editable: `transfer-studio` and `python -m core` work from any folder.
python -m pip install --quiet --no-deps -e .
echo "$WANTED" >"$STAMP"
