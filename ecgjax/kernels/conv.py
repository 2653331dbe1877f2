"""2D convolution with its implementation chosen per backend, in one place (`resolve_impl`).

On GPU and TPU, `lax.conv_general_dilated` is the fast path (cuDNN, the TPU's MXU). On CPU it is not:
XLA:CPU's convolution is close to oneDNN's forward for wide layers, but its kernel gradient is 2-6
times slower, layers with few input channels 2-7 times, grouped ones up to 100 times. Measured on
this project's 2-core AVX-512 CPU with huge pages, milliseconds forward / input gradient / kernel
gradient (`python experiments/benchmark_conv.py`):

  ======================  =====================  =====================  ==================
  layer                   XLA                    oneDNN (here)          TensorFlow (Keras)
  ======================  =====================  =====================  ==================
  16x224x224x3 -> 32      44 / 28 / 33           6.5 / 23 / 8.1         14 / 18 / 9.1
  16x112x112x32 -> 64     35 / 35 / 127          17 / 19 / 21           20 / 18 / 22
  8x224x224x64 -> 64      80 / 81 / 518          61 / 69 / 98           69 / 69 / 105
  ======================  =====================  =====================  ==================

So on CPU the convolution runs in oneDNN, the library TensorFlow itself uses there, through three
XLA FFI handlers (`onednn_conv.cc`: forward, input gradient, kernel gradient) tied together by a
`jax.custom_vjp`. The handlers are compiled on first use against the oneDNN headers of the machine
(Debian/Ubuntu: ``apt-get install libdnnl-dev``; `scripts/env.sh` does it) and cached by source
hash in ``$ECGJAX_KERNEL_CACHE`` (default ``~/.cache/ecgjax``). Without a compiler or oneDNN, 'auto'
falls back to XLA's convolution (a depthwise one to the shifted form of `ecgjax.models.depthwise`)
and says so once in the log; ``impl='onednn'`` then fails with the compiler's message.
`ecgjax.models.conv.conv_general_dilated`, the convolution that every model's `flax.linen.Conv`
runs, asks `resolve_impl` for each layer.

'auto' also keeps XLA's convolution when there is more than one device (XLA's SPMD partitioner
cannot split a custom call over a mesh; a single CPU device already uses every core) and for dtypes
other than float32. Both implementations compute the same function: tests/test_conv.py checks values
and gradients against `lax.conv_general_dilated` for strides, explicit padding and groups.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import subprocess
import tempfile
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

IMPLS = ("auto", "xla", "onednn", "shifted")
Padding = str | Sequence[tuple[int, int]]

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_TARGETS = {"forward": "EcgjaxConvForward", "input_grad": "EcgjaxConvInputGrad",
            "kernel_grad": "EcgjaxConvKernelGrad"}
_LOCK = threading.Lock()
_LIBRARY: dict[str, object] = {}


class KernelBuildError(RuntimeError):
  """The oneDNN convolution could not be compiled or loaded."""


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("ECGJAX_KERNEL_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ecgjax")
  return pathlib.Path(root)


def _compile_command(output: str) -> list[str]:
  cxx = os.environ.get("CXX", "g++")
  return [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
          str(_SOURCE), "-o", output, "-ldnnl"]


def library() -> ctypes.CDLL:
  """Compiles (once per source and jaxlib version), loads and registers the oneDNN handlers.

  Raises:
    KernelBuildError: naming the compiler's complaint (typically the missing oneDNN headers).
  """
  with _LOCK:
    if "lib" in _LIBRARY:
      return _LIBRARY["lib"]  # type: ignore[return-value]
    if "error" in _LIBRARY:
      raise KernelBuildError(_LIBRARY["error"])
    import jaxlib  # pylint: disable=import-outside-toplevel
    digest = hashlib.sha256(_SOURCE.read_bytes() + jaxlib.__version__.encode() +
                            " ".join(_compile_command("")).encode()).hexdigest()[:16]
    path = _cache_dir() / f"onednn_conv-{digest}.so"
    try:
      if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Build into a private file and rename: concurrent processes (pytest-xdist, sweeps) never
        # load a half-written library.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
          result = subprocess.run(_compile_command(tmp), capture_output=True, text=True,
                                  check=False)
          if result.returncode:
            raise KernelBuildError(
                f"Compiling {_SOURCE} failed ({' '.join(_compile_command(tmp))}):\n"
                f"{result.stderr.strip()[-2000:]}\nInstall oneDNN's headers and library "
                "(Debian/Ubuntu: apt-get install libdnnl-dev) or use conv_impl='xla'.")
          os.replace(tmp, path)
        finally:
          if os.path.exists(tmp):
            os.remove(tmp)
      lib = ctypes.cdll.LoadLibrary(str(path))
    except (KernelBuildError, OSError) as e:
      _LIBRARY["error"] = str(e)
      raise KernelBuildError(str(e)) from e
    for target in _TARGETS.values():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, target)), platform="cpu")
    lib.EcgjaxConvImplInfo.restype = ctypes.c_char_p
    _LIBRARY["lib"] = lib
    return lib


@functools.cache
def onednn_available() -> bool:
  """Whether the oneDNN handlers build and load here (logs why not, once)."""
  try:
    library()
    return True
  except KernelBuildError as e:
    logging.warning("oneDNN convolution unavailable, using XLA's: %s", e)
    return False


def resolve_impl(impl: str = "auto", dtype=jnp.float32, *, depthwise: bool = False,
                 backend: str | None = None) -> str:
  """The implementation that runs a convolution: 'onednn', 'xla' or (depthwise only) 'shifted'.

  The one place that picks, for every convolution of every model (`config.model.conv_impl`).
  'auto' is oneDNN on a single CPU device for float32 when the library builds; otherwise XLA, except
  that a depthwise convolution on CPU takes the shifted form (`ecgjax.models.depthwise`), since
  XLA:CPU's grouped convolution is far slower. 'shifted' asks for the shifted form by hand and means
  'xla' for every convolution that is not depthwise.

  Args:
    impl: one of `IMPLS`.
    dtype: the computation dtype.
    depthwise: whether the convolution is depthwise (one input channel per group, as many outputs).
    backend: the JAX backend name; defaults to `jax.default_backend()`.
  """
  if impl not in IMPLS:
    raise ValueError(f"Unknown conv_impl {impl!r}; expected one of {IMPLS}.")
  if impl == "shifted":
    return impl if depthwise else "xla"
  if impl != "auto":
    return impl
  # Only XLA:CPU lacks fast convolutions; GPU (cuDNN) and TPU have them.
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  if jax.device_count() == 1 and jnp.dtype(dtype) == jnp.float32 and onednn_available():
    return "onednn"
  return "shifted" if depthwise else "xla"


def explicit_padding(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                     padding: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
  """((top, bottom), (left, right)) for 'SAME', 'VALID' or explicit pairs, as `lax.conv` reads them."""
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(tuple(spatial), tuple(kernel), tuple(strides), padding.upper())
  else:
    pads = [tuple(int(p) for p in pair) for pair in padding]
    if len(pads) != 2 or any(len(pair) != 2 for pair in pads):
      raise ValueError(f"padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)); got "
                       f"{padding!r}.")
  (pt, pb), (pl, pr) = pads
  return (int(pt), int(pb)), (int(pl), int(pr))


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = "SAME", groups: int = 1, impl: str = "auto") -> jax.Array:
  """`lax.conv_general_dilated` for NHWC `x` and HWIO `kernel`, run by the implementation `impl`.

  Args:
    x: (N, H, W, C) input.
    kernel: (KH, KW, C // groups, D).
    strides: (SH, SW).
    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)).
    groups: feature groups (C for a depthwise convolution).
    impl: 'auto', 'xla' or 'onednn' (see `resolve_impl`).
  Returns:
    (N, H', W', D).
  """
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] * groups != x.shape[-1] \
      or kernel.shape[3] % groups:
    raise ValueError(f"Convolution kernel {kernel.shape} (groups={groups}) does not fit input "
                     f"{x.shape}; expected (kh, kw, {x.shape[-1] // max(groups, 1)}, out) with out "
                     f"divisible by groups.")
  strides = tuple(int(s) for s in strides)
  pads = explicit_padding(x.shape[1:3], kernel.shape[:2], strides, padding)
  impl = resolve_impl(impl, jnp.result_type(x, kernel))
  if impl == "xla":
    return lax.conv_general_dilated(x, kernel, strides, pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups)
  library()
  return _onednn_conv(x.astype(jnp.float32), kernel.astype(jnp.float32), strides, pads, groups)


def _output_shape(x_shape, kernel_shape, strides, pads):
  (pt, pb), (pl, pr) = pads
  oh = (x_shape[1] + pt + pb - kernel_shape[0]) // strides[0] + 1
  ow = (x_shape[2] + pl + pr - kernel_shape[1]) // strides[1] + 1
  return (x_shape[0], oh, ow, kernel_shape[3])


def _call(name, out_shape, a, b, strides, pads, groups):
  (pt, pb), (pl, pr) = pads
  return jax.ffi.ffi_call(_TARGETS[name], jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method="sequential")(
      a, b, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]), pad_top=np.int64(pt),
      pad_bottom=np.int64(pb), pad_left=np.int64(pl), pad_right=np.int64(pr),
      groups=np.int64(groups))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _onednn_conv(x, kernel, strides, pads, groups):
  return _call("forward", _output_shape(x.shape, kernel.shape, strides, pads), x, kernel, strides,
               pads, groups)


def _onednn_conv_fwd(x, kernel, strides, pads, groups):
  return _onednn_conv(x, kernel, strides, pads, groups), (x, kernel)


def _onednn_conv_bwd(strides, pads, groups, residuals, grad):
  x, kernel = residuals
  grad = grad.astype(jnp.float32)
  dx = _call("input_grad", x.shape, grad, kernel, strides, pads, groups)
  dkernel = _call("kernel_grad", kernel.shape, x, grad, strides, pads, groups)
  return dx, dkernel


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def onednn_impl_info(x_shape: Sequence[int], kernel_shape: Sequence[int],
                     strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
                     groups: int = 1) -> dict[str, str]:
  """The oneDNN implementations chosen for a shape (e.g. 'brgconv:avx512_core'), per pass."""
  lib = library()
  pads = explicit_padding(x_shape[1:3], kernel_shape[:2], strides, padding)
  out = _output_shape(x_shape, kernel_shape, strides, pads)
  (pt, pb), (pl, pr) = pads
  geometry = (ctypes.c_int64 * 16)(
      x_shape[0], x_shape[1], x_shape[2], x_shape[3], kernel_shape[0], kernel_shape[1],
      kernel_shape[3], out[1], out[2], groups, strides[0], strides[1], pt, pb, pl, pr)
  return {name: lib.EcgjaxConvImplInfo(op, geometry).decode()
          for op, name in enumerate(("forward", "input_grad", "kernel_grad"))}
