"""Times one convolution layer's forward, input gradient and kernel gradient: XLA, oneDNN, TensorFlow.

Run (about 2 minutes on 2 cores)::

  .venv/bin/python experiments/benchmark_conv.py
  .venv/bin/python experiments/benchmark_conv.py --layers 16x112x112x32-64,16x56x56x144-144g144s2

A layer is ``NxHxWxC-D``, optionally followed by ``kK`` (kernel size, default 3), ``sS`` (stride)
and ``gG`` (groups; ``g144`` with C = D = 144 is a depthwise convolution). The default layers are the
custom CNN's, VGG16's and MobileNetV2's costliest at 224 x 224. Each pass is jitted alone and timed
as the best of `--repeats` calls; TensorFlow (Conv2D, Conv2DBackpropInput/Filter, or the depthwise
ops) runs in a subprocess so that the two runtimes do not share threads. Prints milliseconds per
pass and the ratio of ecgjax's chosen implementation to TensorFlow.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_LAYERS = ("16x224x224x3-32,16x112x112x32-64,16x56x56x64-128,16x28x28x128-256,"
                  "8x224x224x64-64,8x56x56x256-256,8x14x14x512-512,"
                  "16x112x112x96-96g96s2,16x56x56x144-144g144,16x56x56x144-24k1")

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_string("layers", DEFAULT_LAYERS, "Comma-separated layers NxHxWxC-D[kK][sS][gG].")
  flags.DEFINE_integer("repeats", 5, "Timed calls of each pass; the best is kept.")
  flags.DEFINE_string("impls", "xla,onednn", "Comma-separated ecgjax implementations to time.")
  flags.DEFINE_bool("no-tf", False, "Leave TensorFlow out.")
  flags.DEFINE_string("child", None, "Internal: the subprocess timing FRAMEWORK:LAYER.")


def parse_layer(spec: str) -> dict:
  m = re.fullmatch(r"(\d+)x(\d+)x(\d+)x(\d+)-(\d+)((?:[ksg]\d+)*)", spec)
  if not m:
    raise ValueError(f"Bad layer {spec!r}: expected NxHxWxC-D[kK][sS][gG], e.g. 16x56x56x64-128.")
  n, h, w, c, d, rest = m.groups()
  options = {"k": 3, "s": 1, "g": 1}
  options.update({key: int(value) for key, value in re.findall(r"([ksg])(\d+)", rest)})
  return dict(n=int(n), h=int(h), w=int(w), c=int(c), d=int(d), **options)


def _best(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best * 1000


def _arrays(layer):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.standard_normal((layer["n"], layer["h"], layer["w"], layer["c"]), np.float32)
  kernel = rng.standard_normal((layer["k"], layer["k"], layer["c"] // layer["g"], layer["d"]),
                               np.float32) * 0.1
  oh, ow = -(-layer["h"] // layer["s"]), -(-layer["w"] // layer["s"])
  dy = rng.standard_normal((layer["n"], oh, ow, layer["d"]), np.float32)
  return x, kernel, dy


def run_jax(layer: dict, impl: str, repeats: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from ecgjax.kernels import conv  # pylint: disable=import-outside-toplevel
  x, kernel, dy = (jax.numpy.asarray(a) for a in _arrays(layer))
  f = functools.partial(conv.conv2d, strides=(layer["s"],) * 2, padding="SAME", groups=layer["g"],
                        impl=impl)
  forward = jax.jit(f)
  input_grad = jax.jit(lambda x, k, dy: jax.vjp(lambda x: f(x, k), x)[1](dy)[0])
  kernel_grad = jax.jit(lambda x, k, dy: jax.vjp(lambda k: f(x, k), k)[1](dy)[0])
  return {"forward": _best(lambda: forward(x, kernel).block_until_ready(), repeats),
          "input_grad": _best(lambda: input_grad(x, kernel, dy).block_until_ready(), repeats),
          "kernel_grad": _best(lambda: kernel_grad(x, kernel, dy).block_until_ready(), repeats)}


def run_tf(layer: dict, repeats: int) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  x, kernel, dy = (tf.constant(a) for a in _arrays(layer))
  strides = [1, layer["s"], layer["s"], 1]
  if layer["g"] == 1:
    fwd = tf.function(lambda x, k: tf.raw_ops.Conv2D(input=x, filter=k, strides=strides,
                                                       padding="SAME"))
    dx = tf.function(lambda x, k, dy: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides, padding="SAME"))
    dk = tf.function(lambda x, k, dy: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(k), out_backprop=dy, strides=strides, padding="SAME"))
  elif layer["g"] == layer["c"] == layer["d"]:
    kernel = tf.reshape(kernel, (layer["k"], layer["k"], layer["c"], 1))
    fwd = tf.function(lambda x, k: tf.raw_ops.DepthwiseConv2dNative(
        input=x, filter=k, strides=strides, padding="SAME"))
    dx = tf.function(lambda x, k, dy: tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
        input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides, padding="SAME"))
    dk = tf.function(lambda x, k, dy: tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=x, filter_sizes=tf.shape(k), out_backprop=dy, strides=strides, padding="SAME"))
  else:
    return {}
  return {"forward": _best(lambda: fwd(x, kernel).numpy(), repeats),
          "input_grad": _best(lambda: dx(x, kernel, dy).numpy(), repeats),
          "kernel_grad": _best(lambda: dk(x, kernel, dy).numpy(), repeats)}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.child:
    framework, spec = FLAGS.child.split(":", 1)
    layer = parse_layer(spec)
    result = (run_tf(layer, FLAGS.repeats) if framework == "tf"
              else run_jax(layer, framework, FLAGS.repeats))
    print(json.dumps(result))
    return

  # Every child runs with transparent huge pages, as experiments/benchmark.py runs both frameworks
  # (ecgjax/kernels/hugepages.py); ECGJAX_HUGE_PAGES=0 runs them without.
  env = dict(hugepages.environment(), TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
      filter(None, [REPO, os.environ.get("PYTHONPATH")])))

  def child(framework, spec):
    out = subprocess.run([sys.executable, __file__, "--child", f"{framework}:{spec}",
                          "--repeats", str(FLAGS.repeats)], capture_output=True, text=True,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])

  frameworks = FLAGS.impls.split(",") + ([] if FLAGS["no-tf"].value else ["tf"])
  print(f"{'layer':28s}" + "".join(f"{f:>24s}" for f in frameworks) + "   chosen/tf (fwd, dx, dk)")
  for spec in FLAGS.layers.split(","):
    results = {f: child(f, spec) for f in frameworks}
    cells = []
    for f in frameworks:
      r = results[f]
      cells.append(" / ".join(f"{r[p]:.1f}" for p in ("forward", "input_grad", "kernel_grad"))
                   if r else "n/a")
    ratio = ""
    if results.get("tf") and "onednn" in results:
      ratio = ", ".join(f"{results['onednn'][p] / results['tf'][p]:.2f}"
                        for p in ("forward", "input_grad", "kernel_grad"))
    print(f"{spec:28s}" + "".join(f"{c:>24s}" for c in cells) + f"   {ratio}", flush=True)


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
