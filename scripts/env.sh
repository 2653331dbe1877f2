# Sourced by the scripts: makes .venv at the repository root if missing and installs ecgjax into it
# (again only when setup.py changed), then activates it. Needs only Python 3.11 on the machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[ecgjax] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
STAMP=".venv/.ecgjax-installed-$(cat setup.py | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "[ecgjax] installing ecgjax and its pinned dependencies into .venv (once)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  rm -f .venv/.ecgjax-installed-*
  touch "$STAMP"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
