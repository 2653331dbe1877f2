#!/usr/bin/env bash
# The test suite, in the same .venv as the demo (created and installed if missing).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_train.py -x`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pytest -n 2 --dist load -q --durations=15 "${@:-tests}"
