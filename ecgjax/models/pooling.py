"""2x2 max pooling: four strided phases forward, the reshape-and-max gradient backward.

`flax.linen.max_pool` lowers to `reduce_window`, whose gradient is `select_and_scatter`, slow on
XLA:CPU; the gradient of a reshape and a max is not. The forward pass is the elementwise maximum of
the four stride-2 phases instead: XLA:CPU fuses a reshape-and-max forward with the BatchNorm and ReLU
before it into a YNNPACK reduction that is slow there. `python experiments/benchmark_layers.py`
times CustomCNN and VGG16 steps with this pooling and with flax's. Values are identical; gradients are identical wherever a window's maximum is
unique (a tie, which needs two bit-equal floats in one window, splits the gradient between them
instead of giving it to one).
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
  return _pool(x)


def _reshape_max(x):
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# Forward as the elementwise maximum of the four strided phases (an elementwise fusion), backward as
# the gradient of the reshape-and-max form. On XLA:CPU the reduction form's forward can be fused with
# the preceding BatchNorm and ReLU into a slow YNNPACK reduction, while its gradient is the fastest
# (experiments/benchmark_layers.py).
@jax.custom_vjp
def _pool(x):
  return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                     jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


def _pool_fwd(x):
  return _pool(x), x


def _pool_bwd(x, grad):
  return jax.vjp(_reshape_max, x)[1](grad)


_pool.defvjp(_pool_fwd, _pool_bwd)
