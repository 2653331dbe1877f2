# Sourced by the scripts: makes the virtual environment $VENV (default .venv at the repository root)
# with $PYTHON (default python3.11; 3.12 and 3.13 are tested too) if missing, installs the exact
# tested set requirements-lock.txt and ecgjax into it (again only when setup.py or the lock file
# changed), then activates it. On Debian/Ubuntu it also installs oneDNN's headers (libdnnl-dev),
# which ecgjax's CPU convolution compiles against (ecgjax/kernels/conv.py), when they are missing
# and apt-get may be used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="${VENV:-.venv}"
if [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ] && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  echo "[ecgjax] installing oneDNN headers and library (apt-get install libdnnl-dev g++)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev g++) \
      >/dev/null || echo "[ecgjax] apt-get failed: convolutions on CPU will use XLA's (slower)"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[ecgjax] creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.ecgjax-installed-$(cat setup.py requirements-lock.txt | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "[ecgjax] installing requirements-lock.txt and ecgjax into $VENV (once)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements-lock.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  "$VENV/bin/python" -m pip check >/dev/null || "$VENV/bin/python" -m pip check
  rm -f "$VENV"/.ecgjax-installed-*
  touch "$STAMP"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Transparent huge pages for XLA:CPU's buffers (ecgjax/kernels/hugepages.py explains; the Python
# entry points set this themselves, pytest does not).
export GLIBC_TUNABLES="$(python -c 'from ecgjax.kernels import hugepages; print(hugepages.environment()["GLIBC_TUNABLES"])')"
