"""Each augmentation op on its own: shape and dtype kept, seeded, the right effect, identity at 0."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ecgjax.data import transforms

AUGMENTATIONS = {
    "rotate": "rotate(5)", "scale": "scale(0.1)", "translate": "translate(0.1)",
    "perspective": "perspective(0.05)", "brightness": "brightness(0.2)",
    "contrast": "contrast(0.3)", "blur": "blur(2, p=1.0)", "noise": "noise(8)",
    "jpeg": "jpeg(30, 60)",
}
ZERO_STRENGTH = ["rotate(0)", "scale(0)", "translate(0)", "perspective(0)", "brightness(0)",
                 "contrast(0)", "blur(0, p=1.0)", "noise(0)"]
PAPER = (250, 240, 240)


def _page(channels: int = 3, h: int = 96, w: int = 128) -> np.ndarray:
  """Paper with a grid and a trace: enough structure for every op to change something."""
  rng = np.random.default_rng(0)
  image = np.empty((h, w, 3), np.uint8)
  image[...] = PAPER
  image[::8] = (235, 170, 175)
  image[:, ::8] = (235, 170, 175)
  rows = (h // 2 + 10 * np.sin(np.arange(w) / 6) + rng.normal(0, 2, w)).astype(int)
  image[rows, np.arange(w)] = 0
  image[rows + 1, np.arange(w)] = 0
  return image[..., :1] if channels == 1 else image


def _run(spec: str, image: np.ndarray, seed: int = 0) -> np.ndarray:
  return transforms.apply(transforms.parse(spec), image, np.random.default_rng(seed))


def test_every_augmentation_is_registered():
  assert set(AUGMENTATIONS) <= set(transforms.available())


@pytest.mark.parametrize("spec", AUGMENTATIONS.values())
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_determinism(spec, channels):
  image = _page(channels)
  out = _run(spec, image, seed=3)
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out, _run(spec, image, seed=3))
  assert not np.array_equal(out, image), f"{spec} did nothing"
  assert not np.array_equal(out, _run(spec, image, seed=4)), f"{spec} ignores the seed"


@pytest.mark.parametrize("spec", ZERO_STRENGTH)
def test_identity_at_zero_strength(spec):
  image = _page()
  np.testing.assert_array_equal(_run(spec, image), image)


@pytest.mark.parametrize("spec", ["rotate(0)", "scale(0)", "brightness(0)", "blur(0)"])
def test_probability_zero_is_identity(spec):
  image = _page()
  np.testing.assert_array_equal(_run(spec.replace(")", ", p=0.0)"), image), image)


def test_no_flip_is_registered_and_rotation_is_small():
  assert not [name for name in transforms.available() if "flip" in name]
  with pytest.raises(ValueError, match="rotate max_degrees"):
    transforms.parse("rotate(45)")
  assert transforms.MAX_ROTATION_DEGREES <= 10


def _line_row(image: np.ndarray, column: int) -> float:
  dark = image[:, column, 0] < 100
  return float(np.flatnonzero(dark).mean())


def test_rotation_by_a_known_angle_moves_a_horizontal_line():
  h, w = 101, 201
  image = np.full((h, w, 3), 255, np.uint8)
  image[50] = 0  # a horizontal line through the centre
  op = transforms.rotate(4.0)
  # Find a seed that rotates anticlockwise by at least 2 degrees, and the angle it drew.
  seed = next(s for s in range(100) if np.random.default_rng(s).uniform(-4, 4) > 2)
  angle = np.random.default_rng(seed).uniform(-4, 4)
  out = op(image, np.random.default_rng(seed))
  # Anticlockwise on screen: the right end rises (smaller row), the left end falls.
  dx = 80
  expected = dx * np.tan(np.deg2rad(angle))
  assert _line_row(out, 100 + dx) == pytest.approx(50 - expected, abs=1.0)
  assert _line_row(out, 100 - dx) == pytest.approx(50 + expected, abs=1.0)


def test_exposed_borders_are_paper_not_black():
  image = _page()
  for spec in ["rotate(8)", "scale(0.3)", "translate(0.3)", "perspective(0.2)"]:
    out = _run(spec, image, seed=1)
    corners = np.stack([out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]])
    # Every corner is either paper (the fill) or the paper of the moved page.
    assert corners.min() > 150, f"{spec} filled a corner with {corners.tolist()}"


def test_scale_zooms_about_the_centre():
  image = np.full((101, 101, 3), 255, np.uint8)
  image[40:61, 40:61] = 0  # a 21 px square in the middle
  seed = next(s for s in range(100) if np.random.default_rng(s).uniform(-0.3, 0.3) > 0.2)
  factor = 1 + np.random.default_rng(seed).uniform(-0.3, 0.3)
  out = transforms.scale(0.3)(image, np.random.default_rng(seed))
  assert (out[..., 0] < 128).sum() == pytest.approx(21**2 * factor**2, rel=0.1)
  assert (out[50, 50] < 128).all()


def test_translate_shifts_content():
  image = np.full((100, 100, 3), 255, np.uint8)
  image[45:55, 45:55] = 0
  rng = np.random.default_rng(7)
  dx, dy = np.random.default_rng(7).uniform(-0.2, 0.2, size=2) * 100
  out = transforms.translate(0.2)(image, rng)
  rows, cols = np.nonzero(out[..., 0] < 128)
  assert cols.mean() == pytest.approx(49.5 + dx, abs=1.0)
  assert rows.mean() == pytest.approx(49.5 + dy, abs=1.0)


def test_brightness_shifts_the_mean():
  image = np.full((10, 10, 1), 128, np.uint8)
  delta = np.random.default_rng(5).uniform(-0.2, 0.2) * 255
  out = transforms.brightness(0.2)(image, np.random.default_rng(5))
  assert out.mean() == pytest.approx(128 + delta, abs=0.6)


def test_contrast_scales_spread_and_keeps_mean():
  image = _page(1)
  factor = 1 + np.random.default_rng(2).uniform(-0.5, 0.5)
  out = transforms.contrast(0.5)(image, np.random.default_rng(2))
  assert out.astype(float).std() == pytest.approx(image.astype(float).std() * factor, rel=0.05)
  assert out.mean() == pytest.approx(image.mean(), abs=3)


def _high_frequency_energy(image: np.ndarray) -> float:
  x = image[..., 0].astype(float)
  return float((np.diff(x, axis=0)**2).mean() + (np.diff(x, axis=1)**2).mean())


def test_blur_lowers_high_frequency_energy():
  image = _page()
  out = _run("blur(3, p=1.0)", image, seed=1)
  assert _high_frequency_energy(out) < 0.7 * _high_frequency_energy(image)


def test_noise_raises_high_frequency_energy():
  image = _page()
  assert _high_frequency_energy(_run("noise(10)", image)) > _high_frequency_energy(image)


def test_jpeg_changes_bytes_but_keeps_structure():
  image = _page()
  out = _run("jpeg(20, 40)", image)
  assert not np.array_equal(out, image)
  diff = np.abs(out.astype(int) - image.astype(int))
  assert diff.mean() < 12
  # The trace stays where it was.
  assert _line_row(out, 64) == pytest.approx(_line_row(image, 64), abs=1.5)
  # And the result is what a JPEG decoder gives: it re-encodes to a valid JPEG without error.
  buffer = io.BytesIO()
  Image.fromarray(out).save(buffer, "JPEG")
  assert buffer.getvalue()[:2] == b"\xff\xd8"


def test_bad_arguments_are_errors():
  for spec in ["scale(0.9)", "brightness(-1)", "jpeg(90, 10)", "blur(1, p=2)"]:
    with pytest.raises(ValueError):
      transforms.parse(spec)
