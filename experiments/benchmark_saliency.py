r"""SmoothGrad's cost per page against the forward-backward passes it is made of.

  python experiments/benchmark_saliency.py [--models=cnn,mobilenet_v2] [--image_size=256,448] \
      [--num_samples=50] [--pages=2] [--repeats=3]

For each model (untrained weights: the cost does not depend on them) it prints the time of one
jitted batch of `num_samples` forward-backward passes (the gradient of the target logits for
`num_samples` images at once) and the time per page of `saliency.smoothgrad` with `num_samples`
noise samples, over `pages` pages with `chunk_size = num_samples`. The overhead is their ratio
minus one: what chunking, the noise and the accumulation add. Compile
time is excluded (one warm-up call) and printed apart; the figures are medians of `repeats`
alternating calls.
"""

from __future__ import annotations

import functools
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections

from configs import cnn_small
from ecgjax import models
from ecgjax.saliency import attribution as saliency  # Times the attribution maths alone.

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_list("models", ["cnn", "mobilenet_v2"], "Models to time (config.model.name).")
  flags.DEFINE_list("image_size", ["256", "448"],
                    "Input height,width (default: the page CNN's, configs/cnn_small.py).")
  flags.DEFINE_integer("num_samples", 50, "SmoothGrad noise samples per page.")
  flags.DEFINE_integer("pages", 2, "Pages per SmoothGrad call.")
  flags.DEFINE_integer("repeats", 3, "Timed calls of each; the median is printed.")
  flags.DEFINE_float("alpha", 1.0, "MobileNetV2 width multiplier.")


def model_config(name: str) -> ml_collections.ConfigDict:
  if name == "cnn":
    return cnn_small.get_config().model
  if name == "mobilenet_v2":
    return ml_collections.ConfigDict({"name": "mobilenet_v2", "alpha": FLAGS.alpha})
  raise ValueError(f"--models: no benchmark set-up for {name!r}; use cnn or mobilenet_v2.")


def timed(fns, repeats: int) -> tuple[list[float], list[float]]:
  """(first call of each, incl. compile; median of `repeats` further calls of each), seconds.

  The calls alternate between the functions, so load from elsewhere on a shared machine falls on
  all of them alike.
  """
  def once(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start

  first = [once(fn) for fn in fns]
  times = [[once(fn) for fn in fns] for _ in range(repeats)]
  return first, [statistics.median(t[i] for t in times) for i in range(len(fns))]


def main(argv):
  del argv
  h, w = map(int, FLAGS.image_size)
  c = 1 if cnn_small.get_config().data.grayscale else 3  # The page CNN's input channels.
  n, pages = FLAGS.num_samples, FLAGS.pages
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)); "
        f"input {h}x{w}x{c}, {n} samples, {pages} pages per call, median of {FLAGS.repeats}.")
  for name in FLAGS.models:
    model = models.create_model(model_config(name))
    variables = model.init(jax.random.key(0), jnp.zeros((1, h, w, c)))
    logit_fn = functools.partial(model.apply, variables)
    images = jax.random.uniform(jax.random.key(1), (pages, h, w, c), minval=-1.0, maxval=1.0)
    targets = jnp.zeros((pages,), jnp.int32)
    batch = jnp.repeat(images[:1], n, axis=0)
    batch_targets = jnp.zeros((n,), jnp.int32)
    passes = jax.jit(lambda x, t: saliency._target_gradients(logit_fn, x, t))  # pylint: disable=protected-access
    (compile_b, compile_s), (t_batch, t_smooth) = timed(
        [lambda: passes(batch, batch_targets),
         lambda: saliency.smoothgrad(logit_fn, images, targets, key=jax.random.key(0),
                                     num_samples=n, chunk_size=n)], FLAGS.repeats)
    per_page = t_smooth / pages
    print(f"{name:>13}: {n} forward-backward passes in one batch {t_batch:7.3f} s | SmoothGrad "
          f"({n} samples) {per_page:7.3f} s/page | overhead {100 * (per_page / t_batch - 1):+5.1f}% "
          f"| first calls (with compile) {compile_b:.1f} s, {compile_s:.1f} s")


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
