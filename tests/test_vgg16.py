"""VGG16: Keras' 13 convolutions and head names, the pooling head, train mode and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.vgg16 import VGG16


@pytest.mark.parametrize("head,feature_size", [("classifier", 8), ("gap", 32)])
def test_heads(head, feature_size):
  model = VGG16(num_classes=4, head=head, dense_units=8, width=1 / 16, dropout=0.5)
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = jax.jit(model.init)(jax.random.key(1), images)
  params = variables["params"]
  assert len([k for k in params if "_conv" in k]) == 13
  assert params["block5_conv3"]["kernel"].shape == (3, 3, 32, 32)
  assert ("fc1" in params) == (head == "classifier")
  logits, features = model.apply(variables, images, return_features=True)
  assert logits.shape == (2, 4) and features.shape == (2, feature_size)
  train_logits = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(train_logits, logits)  # dropout is active in training only


def test_unknown_head_is_an_error():
  with pytest.raises(ValueError, match="head='avg'"):
    VGG16(num_classes=4, head="avg", width=1 / 16).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
