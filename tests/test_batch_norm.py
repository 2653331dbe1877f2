"""Our BatchNorm equals flax's in outputs, gradients and statistics, in training and evaluation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.batch_norm import BatchNorm


@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (16, 7)])
def test_matches_flax_batch_norm(shape):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(2.0, 3.0, size=shape).astype(np.float32))
  ours = BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3)
  theirs = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3)
  variables = theirs.init(jax.random.key(0), x)
  assert jax.tree_util.tree_structure(ours.init(jax.random.key(0), x)) == \
      jax.tree_util.tree_structure(variables)
  features = shape[-1]
  variables = {"params": {"scale": jnp.asarray(rng.uniform(0.5, 2, features), jnp.float32),
                          "bias": jnp.asarray(rng.normal(size=features), jnp.float32)},
               "batch_stats": {"mean": jnp.asarray(rng.normal(size=features), jnp.float32),
                               "var": jnp.asarray(rng.uniform(0.5, 2, features), jnp.float32)}}
  weights = jnp.asarray(rng.normal(size=shape), jnp.float32)

  def loss(module, params, x):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y) * weights), (y, updates["batch_stats"])

  results = {}
  for name, module in (("ours", ours), ("theirs", theirs)):
    (value, (y, stats)), grads = jax.value_and_grad(
        loss, argnums=(1, 2), has_aux=True)(module, variables["params"], x)
    results[name] = (value, y, stats, grads)
  for a, b in zip(jax.tree_util.tree_leaves(results["ours"]),
                  jax.tree_util.tree_leaves(results["theirs"])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
  # Evaluation mode uses the moving statistics.
  evaluated = [m.clone(use_running_average=True).apply(variables, x) for m in (ours, theirs)]
  np.testing.assert_allclose(evaluated[0], evaluated[1], rtol=1e-5, atol=1e-5)
