# Sourced by the scripts: makes .venv at the repository root if missing and installs ecgjax into it
# (again only when setup.py changed), then activates it. Needs Python 3.11; on Debian/Ubuntu it also
# installs oneDNN's headers (libdnnl-dev), which ecgjax's CPU convolution compiles against
# (ecgjax/kernels/conv.py), when they are missing and apt-get may be used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ] && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  echo "[ecgjax] installing oneDNN headers and library (apt-get install libdnnl-dev g++)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev g++) \
      >/dev/null || echo "[ecgjax] apt-get failed: convolutions on CPU will use XLA's (slower)"
fi
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
# Transparent huge pages for XLA:CPU's buffers (ecgjax/kernels/hugepages.py explains; the Python
# entry points set this themselves, pytest does not).
export GLIBC_TUNABLES="$(python -c 'from ecgjax.kernels import hugepages; print(hugepages.environment()["GLIBC_TUNABLES"])')"
