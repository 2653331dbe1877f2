"""The host ops that turn a decoded page into the model's input: resize and grayscale, by spec."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ecgjax.data import transforms


def _run(spec: str, image: np.ndarray) -> np.ndarray:
  return transforms.apply(transforms.parse(spec), image, np.random.default_rng(0))


def test_registered_ops_and_empty_spec():
  assert set(transforms.available()) == {"resize", "grayscale"}
  assert transforms.parse("") == [] and transforms.parse("none") == []


def test_resize_pad_keeps_aspect_and_pads_with_paper():
  image = np.zeros((100, 400, 3), np.uint8)  # Black, 4:1, into 48x80.
  out = _run("resize(48, 80, mode='pad')", image)
  assert out.shape == (48, 80, 3) and out.dtype == np.uint8
  dark_rows = np.flatnonzero(out.mean(axis=(1, 2)) < 128)
  assert len(dark_rows) == 20 and dark_rows[0] == 14  # Centred: 14 rows of paper above.
  assert (out[:14] == 255).all() and (out[34:] == 255).all()
  assert transforms.fit_box((100, 400), (48, 80)) == (14, 0, 20, 80)


def test_resize_stretch_matches_pil_bilinear():
  image = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
  out = _run("resize(30, 30, mode='stretch')", image)
  reference = np.asarray(Image.fromarray(image).resize((30, 30), Image.BILINEAR, reducing_gap=2.0))
  np.testing.assert_array_equal(out, reference)
  np.testing.assert_array_equal(_run("resize(60, 90)", image), image)  # Same size: untouched.


def test_grayscale_is_pil_luminance():
  image = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  out = _run("grayscale", image)
  assert out.shape == (8, 8, 1)
  np.testing.assert_array_equal(out[..., 0], np.asarray(Image.fromarray(image).convert("L")))
  np.testing.assert_array_equal(_run("grayscale", out), out)


def test_bad_specs_are_errors_naming_the_op():
  for spec, message in [("resize(1, 2, mode='crop')", "resize mode"),
                        ("rotate(2)", "unknown op 'rotate'"), ("resize(1", "cannot parse"),
                        ("resize(1, 2, 3, 4, 5)", "bad arguments for 'resize'"),
                        ("resize(a=)", "bad arguments")]:
    with pytest.raises(ValueError, match=message):
      transforms.parse(spec)
