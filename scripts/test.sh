#!/bin/bash
# Installs what the test suite needs (Debian packages, vpopmail user, .venv) and runs ruff and pytest.
# Usage: bash scripts/test.sh [pytest args...]      (as root, from anywhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

vpop_install_env

vpop_log "ruff check ."
.venv/bin/ruff check .

vpop_log "pytest $*"
exec .venv/bin/python -m pytest "$@"
