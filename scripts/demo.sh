#!/bin/bash
# The main job on the embedded default (CDB store) in a sandbox folder: a domain, a user,
# a login through the installed vchkpw with a real fd 3, then a refused login.
# Usage: bash scripts/demo.sh      (as root, on Debian 12)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

vpop_install_env
exec .venv/bin/python -I scripts/demo.py
