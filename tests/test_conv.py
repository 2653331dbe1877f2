"""The oneDNN convolution (ecgjax.kernels.conv) against `lax.conv_general_dilated`, and its choice."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.kernels import conv
from ecgjax.models import cnn, mobilenet_v2, vgg16

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_onednn_builds_here():
  # CI installs oneDNN (scripts/env.sh); on this CPU the fast path must be the one in use.
  assert conv.onednn_available()
  assert conv.resolve_impl("auto") == "onednn"
  info = conv.onednn_impl_info((2, 16, 16, 8), (3, 3, 8, 16))
  assert set(info) == {"forward", "input_grad", "kernel_grad"}
  assert all(name and not name.startswith("error") for name in info.values()), info


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding,groups", [
    ((2, 9, 7, 3), (3, 3, 3, 5), (1, 1), "SAME", 1),
    ((2, 12, 10, 8), (3, 3, 8, 16), (2, 2), "SAME", 1),          # stride 2, even size
    ((1, 11, 13, 4), (3, 3, 4, 6), (2, 1), ((0, 1), (2, 0)), 1),  # asymmetric, Keras-style pads
    ((2, 8, 8, 6), (3, 3, 6, 4), (1, 1), "VALID", 1),
    ((2, 10, 10, 12), (3, 3, 1, 12), (1, 1), "SAME", 12),        # depthwise
    ((2, 11, 11, 12), (3, 3, 1, 12), (2, 2), ((0, 1), (0, 1)), 12),
    ((2, 6, 6, 8), (3, 3, 4, 6), (1, 1), "SAME", 2),             # two groups
    ((2, 7, 5, 16), (1, 1, 16, 8), (1, 1), "VALID", 1),          # pointwise
    ((3, 5, 5, 4), (5, 5, 4, 4), (1, 1), "SAME", 1),             # larger kernel
])
def test_onednn_equals_xla_in_values_and_gradients(x_shape, kernel_shape, strides, padding,
                                                   groups):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
  kernel = jnp.asarray(rng.standard_normal(kernel_shape, np.float32))

  def loss(x, kernel, impl):
    y = conv.conv2d(x, kernel, strides, padding, groups, impl=impl)
    return jnp.sum(jnp.sin(y)), y

  (ref_loss, ref), ref_grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(x, kernel, "xla")
  (out_loss, out), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True),
                                   static_argnums=2)(x, kernel, "onednn")
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out_loss, ref_loss, rtol=1e-4, atol=1e-4)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_many_shapes_in_one_program_and_under_vmap():
  # Several cached primitives in one jitted program, and a vmapped call (run one slice at a time).
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((3, 2, 8, 8, 4), np.float32))
  k1 = jnp.asarray(rng.standard_normal((3, 3, 4, 8), np.float32))
  k2 = jnp.asarray(rng.standard_normal((3, 3, 8, 2), np.float32))
  net = lambda x, impl: conv.conv2d(conv.conv2d(x, k1, impl=impl), k2, (2, 2), impl=impl)
  ref = jax.vmap(lambda x: net(x, "xla"))(x)
  out = jax.jit(jax.vmap(lambda x: net(x, "onednn")))(x)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


def test_choice_and_bad_arguments():
  assert conv.resolve_impl("xla") == "xla"
  assert conv.resolve_impl("auto", jnp.bfloat16) == "xla"  # oneDNN path is float32 only
  with pytest.raises(ValueError, match="conv_impl 'cudnn'"):
    conv.resolve_impl("cudnn")
  with pytest.raises(ValueError, match=r"does not fit input \(1, 4, 4, 3\)"):
    conv.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 4)))
  with pytest.raises(ValueError, match="padding must be"):
    conv.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 4)), padding=((1, 1),))
  # bfloat16 through 'auto' is XLA's convolution and keeps its dtype.
  y = conv.conv2d(jnp.ones((1, 4, 4, 3), jnp.bfloat16), jnp.ones((3, 3, 3, 2), jnp.bfloat16))
  assert y.dtype == jnp.bfloat16


def test_without_a_compiler_auto_falls_back_and_onednn_says_why(tmp_path):
  script = textwrap.dedent("""
      import jax.numpy as jnp
      from ecgjax.kernels import conv
      assert conv.resolve_impl("auto") == "xla"
      y = conv.conv2d(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 3)))
      assert float(y[0, 2, 2, 0]) == 18.0
      try:
        conv.conv2d(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 3)), impl="onednn")
      except conv.KernelBuildError as e:
        print("ERROR", e)
  """)
  env = dict(os.environ, CXX="false", ECGJAX_KERNEL_CACHE=str(tmp_path), PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ERROR Compiling" in out.stdout and "libdnnl-dev" in out.stdout
  assert "onednn_conv.cc" in out.stdout
  assert not list(tmp_path.glob("*.so"))  # nothing half-built left behind


@pytest.mark.parametrize("make", [
    lambda impl: cnn.CustomCNN(4, filters=(4, 8), dense_units=8, dropout=0.0, conv_impl=impl),
    lambda impl: vgg16.VGG16(4, head="gap", width=1 / 16, conv_impl=impl),
    lambda impl: mobilenet_v2.MobileNetV2(4, alpha=0.35, conv_impl=impl),
], ids=["cnn", "vgg16", "mobilenet_v2"])
def test_models_are_the_same_function_with_either_convolution(make):
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  # Jitted throughout: op by op, MobileNetV2 compiles each of its few hundred operations alone.
  variables = jax.jit(make("xla").init)(jax.random.key(0), images)

  # Inference mode: training-mode BatchNorm over 2 images of 1x1 features (MobileNetV2's last
  # stages at 32 px) is too ill-conditioned for a comparison; the convolutions' three passes all run.
  def loss(params, impl):
    logits = make(impl).apply({**variables, "params": params}, images)
    return jnp.sum(logits ** 2), logits

  value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (_, ref), ref_grads = value_and_grad(variables["params"], "xla")
  (_, out), grads = value_and_grad(variables["params"], "onednn")
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4)
