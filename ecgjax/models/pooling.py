"""2x2 max pooling as a reshape and a max, which XLA:CPU differentiates far faster than `max_pool`.

`flax.linen.max_pool` lowers to `reduce_window`, whose gradient is `select_and_scatter`: on XLA:CPU
a whole CustomCNN(filters=(32, 64, 128, 256)) train step at 224x224, batch 16, ran at 15.9 img/s with
it against 24.6 img/s with this form (measured 2026-11-25 on 2 cores; `experiments/benchmark.py`
times the models end to end). Values are identical; gradients are
identical wherever a window's maximum is unique (a tie, which needs two bit-equal floats in one
window, splits the gradient between them instead of giving it to one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_pool_2x2(x: jax.Array, padding: str = "VALID") -> jax.Array:
  """Max over 2x2 windows with stride 2 of NHWC `x`.

  padding="VALID" drops an odd last row/column; "SAME" pads it with -inf (as `nn.max_pool` does).
  """
  if padding not in ("VALID", "SAME"):
    raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}.")
  n, h, w, c = x.shape
  if padding == "SAME" and (h % 2 or w % 2):
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
  else:
    x = x[:, :h - h % 2, :w - w % 2]
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
