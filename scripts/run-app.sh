#!/usr/bin/env bash
# Installs Transfer Studio into .venv and starts the app on http://localhost:8501.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh requirements.txt
exec streamlit run app.py --server.address "${TRANSFER_STUDIO_ADDRESS:-localhost}" "$@"
