"""Transparent huge pages are switched on by re-executing the command (ecgjax.kernels.hugepages)."""

import os
import subprocess
import sys
import textwrap

from ecgjax.kernels import hugepages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_environment_adds_the_tunable_once_and_keeps_others():
  assert hugepages.environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  env = hugepages.environment({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1", "A": "b"})
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.hugetlb=1", "A": "b"}
  assert hugepages.environment(env) == env
  kept = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}  # the user's own choice wins
  assert hugepages.environment(kept) == kept
  assert hugepages.environment({"ECGJAX_HUGE_PAGES": "0"}) == {"ECGJAX_HUGE_PAGES": "0"}


def _run(env_update, *args):
  script = textwrap.dedent("""
      import os, sys
      from ecgjax.kernels import hugepages
      print("start", os.getpid(), sys.argv[1:], flush=True)
      hugepages.ensure()
      print("tunables", os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:])
  """)
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "ECGJAX_HUGE_PAGES")}
  env.update(PYTHONPATH=REPO, **env_update)
  out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  return out.stdout.splitlines()


def test_ensure_reexecutes_once_with_the_same_arguments():
  lines = _run({}, "--flag=1", "x")
  if not hugepages.available():  # a kernel without transparent huge pages: nothing to do
    assert lines[-1] == "tunables  ['--flag=1', 'x']"
    return
  starts = [l for l in lines if l.startswith("start")]
  assert len(starts) == 2 and starts[0] == starts[1]  # same pid (exec), same arguments
  assert lines[-1] == "tunables glibc.malloc.hugetlb=1 ['--flag=1', 'x']"


def test_ensure_can_be_turned_off():
  lines = _run({"ECGJAX_HUGE_PAGES": "0"})
  assert len([l for l in lines if l.startswith("start")]) == 1
  assert lines[-1] == "tunables  []"
