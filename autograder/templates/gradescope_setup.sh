#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder's image
# (written by `python -m autograder gradescope`). It installs Python 3.11 and
# the course's pinned requirements into /autograder/venv.
set -euo pipefail
cd "$$(dirname "$$0")"
if ! command -v python3.11 >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv
fi
python3.11 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --upgrade pip
/autograder/venv/bin/python -m pip install --extra-index-url $torch_index -r requirements.txt
