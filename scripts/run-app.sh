#!/usr/bin/env bash
# Installs Transfer Studio into .venv (skipped when nothing changed since the last install) and
# starts the app on http://localhost:8501 with .streamlit/config.toml (no file watching).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh requirements.txt
exec streamlit run app.py --server.address "${TRANSFER_STUDIO_ADDRESS:-localhost}" "$@"
