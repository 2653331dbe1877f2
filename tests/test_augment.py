"""On-device augmentation: each op on its own, against the PIL operation it replaced, and in the step.

The PIL operations here are the oracle: the same parameters must give images close in pixels (not
bit-equal: PIL rounds to uint8 and approximates a Gaussian blur by box blurs).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageFilter

from ecgjax.data import augment

AUGMENTATIONS = {
    "rotate": "rotate(5)", "scale": "scale(0.1)", "translate": "translate(0.1)", "shift": "shift(8)",
    "perspective": "perspective(0.05)", "brightness": "brightness(0.2)",
    "contrast": "contrast(0.3)", "blur": "blur(2, p=1.0)", "noise": "noise(8)",
}
ZERO_STRENGTH = ["rotate(0)", "scale(0)", "translate(0)", "shift(0)", "perspective(0)",
                 "brightness(0)", "contrast(0)", "blur(0, p=1.0)", "noise(0)"]
PAPER = (250, 240, 240)
GRID = (235, 170, 175)


def _page(channels: int = 3, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
  """Paper with a grid and a trace: enough structure for every op to change something."""
  rng = np.random.default_rng(seed)
  image = np.empty((h, w, 3), np.uint8)
  image[...] = PAPER
  image[::8] = GRID
  image[:, ::8] = GRID
  rows = (h // 2 + 10 * np.sin(np.arange(w) / 6) + rng.normal(0, 2, w)).astype(int)
  image[rows, np.arange(w)] = 0
  image[rows + 1, np.arange(w)] = 0
  return image[..., :1] if channels == 1 else image


def _run(spec: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
  batch = images[None] if images.ndim == 3 else images
  out = jax.jit(augment.parse(spec).apply)(jnp.asarray(batch), jax.random.key(seed))
  out = np.asarray(out)
  return out[0] if images.ndim == 3 else out


def _warp_one(image: np.ndarray, maps: jax.Array, fill) -> np.ndarray:
  fill = jnp.asarray(np.broadcast_to(np.asarray(fill, np.float32), (1, image.shape[-1])))
  return np.asarray(augment.warp(jnp.asarray(image[None]), maps.reshape(1, 3, 3), fill))[0]


def _close_to(out: np.ndarray, reference: np.ndarray, mean: float, p99: float) -> None:
  diff = np.abs(out.astype(np.float64) - reference.astype(np.float64))
  assert diff.mean() <= mean and np.percentile(diff, 99) <= p99, (diff.mean(),
                                                                  np.percentile(diff, 99))


# -- the registry and the spec ------------------------------------------------------------------


SIGNAL_AUGMENTATIONS = {
    "amplitude": "amplitude(0.2)", "lead_amplitude": "lead_amplitude(0.2)",
    "time_shift": "time_shift(0.02)", "signal_noise": "signal_noise(0.05)",
    "drop_leads": "drop_leads(0.5)",
}


def test_every_augmentation_is_registered_and_no_flip():
  assert set(AUGMENTATIONS) | set(SIGNAL_AUGMENTATIONS) == set(augment.available())
  assert not [name for name in augment.available() if "flip" in name]
  assert augment.MAX_ROTATION_DEGREES <= 10


@pytest.mark.parametrize("spec,field", [
    ("rotate(45)", "rotate max_degrees"), ("scale(0.9)", "scale max_fraction"),
    ("brightness(-1)", "brightness max_delta"), ("blur(1, p=2)", "blur p"),
    ("jpeg(50)", "unknown op 'jpeg'"), ("rotate(2", "cannot parse"),
    ("rotate(x=1)", "rotate"), ("rotate('a')", "rotate max_degrees")])
def test_bad_specs_name_the_field_and_the_value(spec, field):
  with pytest.raises(ValueError, match="config.data.augment") as error:
    augment.parse(spec)
  assert field in str(error.value)


def test_spec_parses_positional_and_keyword_probability():
  aug = augment.parse("rotate(2)|blur(1.5)|noise(3, 0.25)|contrast(0.1, p=0.5)")
  assert [op.name for op in aug.ops] == ["rotate", "blur", "noise", "contrast"]
  assert [op.p for op in aug.ops] == [1.0, 0.5, 0.25, 0.5]
  assert not augment.parse("") and not augment.parse("none")
  # Hashable and equal by value: the jitted step takes it as a static argument.
  assert hash(aug) == hash(augment.parse("rotate(2)|blur(1.5)|noise(3, 0.25)|contrast(0.1, p=0.5)"))


# -- every op: shape, dtype, determinism by key, identity at zero ------------------------------


@pytest.mark.parametrize("spec", AUGMENTATIONS.values())
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_determinism(spec, channels):
  images = np.stack([_page(channels, seed=s) for s in range(3)])
  out = _run(spec, images, seed=3)
  assert out.shape == images.shape and out.dtype == np.float32
  assert out.min() >= 0 and out.max() <= 255
  np.testing.assert_array_equal(out, _run(spec, images, seed=3))
  assert not np.allclose(out, images, atol=0.5), f"{spec} did nothing"
  assert not np.allclose(out, _run(spec, images, seed=4)), f"{spec} ignores the key"
  # Each example draws its own strength: the same page twice in a batch comes out differently.
  twice = np.stack([images[0], images[0]])
  pair = _run(spec, twice, seed=3)
  assert not np.allclose(pair[0], pair[1]), f"{spec} draws one strength per batch"


@pytest.mark.parametrize("spec", ZERO_STRENGTH)
def test_identity_at_zero_strength(spec):
  image = _page()
  np.testing.assert_allclose(_run(spec, image), image, atol=1e-3)


@pytest.mark.parametrize("spec", ["rotate(5)", "scale(0.2)", "brightness(0.3)", "blur(2)",
                                  "noise(10)"])
def test_probability_zero_is_identity(spec):
  image = _page()
  np.testing.assert_allclose(_run(spec.replace(")", ", p=0.0)"), image), image, atol=1e-3)


def test_probability_acts_on_that_share_of_examples():
  images = np.repeat(_page()[None], 200, axis=0)
  out = _run("brightness(0.3, p=0.25)", images, seed=1)
  changed = np.abs(out - images).reshape(200, -1).max(axis=1) > 0.5
  assert 0.15 < changed.mean() < 0.35


# -- geometric ops against PIL ------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [3.0, -7.5])
def test_rotation_matches_pil_rotate(degrees):
  image = _page(w=160)
  out = _warp_one(image, augment.rotation_map(jnp.float32(degrees), (96, 160)), PAPER)
  reference = np.asarray(Image.fromarray(image).rotate(
      degrees, resample=Image.Resampling.BILINEAR, fillcolor=PAPER))
  _close_to(out, reference, mean=0.35, p99=1.01)


def test_rotation_by_a_known_angle_moves_a_horizontal_line():
  h, w = 101, 201
  image = np.full((h, w, 3), 255, np.uint8)
  image[50] = 0  # a horizontal line through the centre
  angle = 3.0
  out = _warp_one(image, augment.rotation_map(jnp.float32(angle), (h, w)), 255)
  # Anticlockwise on screen: the right end rises (smaller row), the left end falls.
  dx = 80
  expected = dx * np.tan(np.deg2rad(angle))
  for column, row in ((100 + dx, 50 - expected), (100 - dx, 50 + expected)):
    dark = out[:, column, 0] < 128
    assert np.flatnonzero(dark).mean() == pytest.approx(row, abs=1.0)


@pytest.mark.parametrize("factor", [0.8, 1.15])
def test_scale_matches_pil_affine_about_the_centre(factor):
  image = _page()
  h, w = image.shape[:2]
  out = _warp_one(image, augment.scale_map(jnp.float32(factor), (h, w)), PAPER)
  cx, cy = w / 2, h / 2
  coeffs = (1 / factor, 0, cx - cx / factor, 0, 1 / factor, cy - cy / factor)
  reference = np.asarray(Image.fromarray(image).transform(
      (w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
      fillcolor=PAPER))
  _close_to(out, reference, mean=0.35, p99=1.01)
  # The square in the middle grows by the factor squared in area.
  square = np.full((101, 101, 3), 255, np.uint8)
  square[40:61, 40:61] = 0
  zoomed = _warp_one(square, augment.scale_map(jnp.float32(factor), (101, 101)), 255)
  assert (zoomed[..., 0] < 128).sum() == pytest.approx(21**2 * factor**2, rel=0.1)


def test_translation_matches_pil_and_moves_content():
  image = _page()
  h, w = image.shape[:2]
  dx, dy = 7.3, -4.6
  out = _warp_one(image, augment.translation_map(jnp.float32(dx), jnp.float32(dy)), PAPER)
  reference = np.asarray(Image.fromarray(image).transform(
      (w, h), Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
      resample=Image.Resampling.BILINEAR, fillcolor=PAPER))
  _close_to(out, reference, mean=0.35, p99=1.01)
  square = np.full((100, 100, 3), 255, np.uint8)
  square[45:55, 45:55] = 0
  moved = _warp_one(square, augment.translation_map(jnp.float32(dx), jnp.float32(dy)), 255)
  rows, cols = np.nonzero(moved[..., 0] < 128)
  assert cols.mean() == pytest.approx(49.5 + dx, abs=0.6)
  assert rows.mean() == pytest.approx(49.5 + dy, abs=0.6)


def test_shift_moves_whole_pixels_and_keeps_every_value():
  image = _page()
  h, w = image.shape[:2]
  outs = _run("shift(6)", np.stack([image] * 8), seed=3)
  fill = np.asarray(augment.paper_colour(jnp.asarray(image[None])))[0]
  moves = set()
  for out in outs:
    for dx, dy in itertools.product(range(-6, 7), repeat=2):
      ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
      source = image[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
      if np.array_equal(out[ys, xs], source):  # Exactly the page's pixels, moved by (dx, dy).
        exposed = np.ones((h, w), bool)
        exposed[ys, xs] = False
        np.testing.assert_allclose(out[exposed], np.broadcast_to(fill, out[exposed].shape))
        moves.add((dx, dy))
        break
    else:
      raise AssertionError("an output is not the page moved by whole pixels")
  assert len(moves) > 4  # The moves vary.
  # Translating by fractions of a pixel greys the black trace (red channel: trace 0, grid 235,
  # paper 250); shifting never does.
  grey = lambda x: ((x[..., 0] > 10) & (x[..., 0] < 200)).sum()  # noqa: E731
  assert grey(image) == grey(outs) == 0
  assert grey(_run("translate(0.05)", np.stack([image] * 8), seed=3)) > 100


def _pil_perspective_coefficients(moves: np.ndarray, w: int, h: int) -> np.ndarray:
  corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
  rows, rhs = [], []
  for (x, y), (u, v) in zip(corners + moves, corners):
    rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
    rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    rhs.extend([u, v])
  return np.linalg.solve(np.array(rows), np.array(rhs))


def test_perspective_matches_pil_perspective():
  image = _page()
  h, w = image.shape[:2]
  moves = np.random.default_rng(2).uniform(-0.05, 0.05, size=(4, 2)) * (w, h)
  out = _warp_one(image, augment.perspective_map(jnp.asarray(moves, jnp.float32), (h, w)), PAPER)
  reference = np.asarray(Image.fromarray(image).transform(
      (w, h), Image.Transform.PERSPECTIVE, tuple(_pil_perspective_coefficients(moves, w, h)),
      resample=Image.Resampling.BILINEAR, fillcolor=PAPER))
  _close_to(out, reference, mean=0.35, p99=1.01)


def test_exposed_borders_are_paper_not_black():
  image = _page()
  for spec in ["rotate(8)", "scale(0.3)", "translate(0.3)", "perspective(0.2)"]:
    out = _run(spec, np.stack([image] * 4), seed=1)
    corners = np.stack([out[:, 0, 0], out[:, 0, -1], out[:, -1, 0], out[:, -1, -1]])
    # Every corner is either paper (the fill) or the paper of the moved page.
    assert corners.min() > 150, f"{spec} filled a corner with {corners.tolist()}"
  fill = np.asarray(augment.paper_colour(jnp.asarray(image[None])))[0]
  np.testing.assert_allclose(fill, PAPER, atol=1.0)  # Grid and trace at the edge are ignored.


def test_consecutive_geometric_ops_resample_once():
  # Rotating by +a then -a in one spec is the identity map, so the image comes back nearly exact;
  # two separate resamplings would blur it.
  image = _page()
  maps = augment.rotation_map(jnp.float32(4.0), (96, 128)) @ augment.rotation_map(
      jnp.float32(-4.0), (96, 128))
  np.testing.assert_allclose(_warp_one(image, maps, PAPER), image, atol=1e-2)


# -- photometric ops ------------------------------------------------------------------------------


def test_brightness_and_contrast_match_their_numpy_definitions():
  image = _page().astype(np.float32)[None]
  out = np.asarray(augment.adjust_brightness(jnp.asarray(image), jnp.array([-30.0])))
  np.testing.assert_allclose(out, np.clip(image - 30, 0, 255), atol=1e-4)
  out = np.asarray(augment.adjust_contrast(jnp.asarray(image), jnp.array([1.4])))
  mean = image.mean()
  np.testing.assert_allclose(out, np.clip(mean + (image - mean) * 1.4, 0, 255), atol=1e-2)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_blur_matches_pil_gaussian_blur(sigma):
  image = _page()
  out = np.asarray(augment.gaussian_blur(jnp.asarray(image[None], jnp.float32),
                                         jnp.array([sigma], jnp.float32),
                                         radius=int(np.ceil(3 * sigma))))[0]
  reference = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))
  _close_to(out, reference, mean=1.6, p99=11.0)
  # Blurring lowers high-frequency energy.
  energy = lambda x: float((np.diff(x[..., 0].astype(float), axis=0)**2).mean())
  assert energy(out) < 0.8 * energy(image)


def test_noise_has_the_drawn_standard_deviation():
  image = np.full((1, 64, 64, 1), 128, np.uint8)
  out = _run("noise(20)", np.repeat(image, 64, axis=0), seed=5)
  residual = (out - 128).reshape(64, -1)
  stds = residual.std(axis=1)
  assert abs(residual.mean()) < 0.2
  assert stds.min() >= 0 and stds.max() <= 20.5
  assert 7 < stds.mean() < 13  # Uniform in [0, 20]: mean 10.


# -- signal ops: the digitized leads (B, T, 13) in mV, each lead 0 outside its window --------------


def _leads(batch: int = 8, n: int = 400) -> np.ndarray:
  rng = np.random.default_rng(3)
  x = np.zeros((batch, n, 13), np.float32)
  quarter = n // 4
  for k in range(12):  # Lead k shown in its quarter of the record, as on the page.
    start = (k // 3) * quarter
    x[:, start:start + quarter, k] = rng.normal(0, 0.5, (batch, quarter))
  x[:, :, 12] = rng.normal(0, 0.5, (batch, n))  # The rhythm strip: all 10 s.
  return x


def _apply(spec: str, x: np.ndarray, seed: int = 0) -> np.ndarray:
  return np.asarray(jax.jit(augment.parse(spec).apply)(jnp.asarray(x), jax.random.key(seed)))


def test_signal_amplitude_scales_every_lead_by_one_factor():
  x = _leads()
  y = _apply("amplitude(0.2)", x)
  ratio = y[x != 0] / x[x != 0]
  per_example = (y / np.where(x == 0, np.nan, x)).reshape(len(x), -1)
  assert np.nanmax(per_example, 1) - np.nanmin(per_example, 1) == pytest.approx(0, abs=1e-5)
  assert 0.8 - 1e-6 <= ratio.min() and ratio.max() <= 1.2 + 1e-6 and ratio.std() > 0.01
  lead = _apply("lead_amplitude(0.2)", x)
  factors = np.nanmedian(lead / np.where(x == 0, np.nan, x), axis=1)  # (B, 13)
  assert np.all(np.abs(factors - 1) <= 0.2 + 1e-6) and np.std(factors, axis=1).min() > 0.01


def test_signal_time_shift_moves_all_channels_together_by_whole_samples():
  x = _leads()
  y = _apply("time_shift(0.05)", x)
  shifts = []
  for b in range(len(x)):
    found = [k for k in range(-20, 21)
             if np.array_equal(y[b], np.roll(x[b], k, axis=0) * _inside(len(x[b]), k)[:, None])]
    assert len(found) == 1, b
    shifts.append(found[0])
  assert len(set(shifts)) > 1 and max(map(abs, shifts)) <= 0.05 * x.shape[1]


def _inside(n: int, k: int) -> np.ndarray:
  index = np.arange(n) - k
  return ((index >= 0) & (index < n)).astype(np.float32)


def test_signal_noise_leaves_the_unshown_zeros_and_has_the_drawn_size():
  x = _leads(batch=4, n=4000)
  y = _apply("signal_noise(0.1)", x)
  assert np.array_equal(y[x == 0], x[x == 0])
  std = (y - x).reshape(4, -1)[:, (x != 0).reshape(4, -1)[0]].std(axis=1)
  assert 0 < std.min() and std.max() <= 0.1 * 1.05


def test_drop_leads_zeroes_whole_leads_never_the_rhythm_strip():
  x = _leads(batch=32)
  y = _apply("drop_leads(0.5)", x)
  kept = np.all(y == x, axis=1)  # (B, 13)
  dropped = np.all(y == 0, axis=1) & np.any(x != 0, axis=1)
  assert np.all(kept | dropped) and kept[:, 12].all()
  assert 0.3 < dropped[:, :12].mean() < 0.7
  assert np.all(_apply("drop_leads(1.0)", x)[..., :12] == 0)


def test_signal_ops_and_page_ops_do_not_mix():
  with pytest.raises(ValueError, match="mixes page ops and signal ops"):
    augment.parse("rotate(2)|amplitude(0.1)")
  with pytest.raises(ValueError, match="act on signals"):
    augment.parse("amplitude(0.1)").apply(jnp.zeros((1, 8, 8, 1)), jax.random.key(0))
  with pytest.raises(ValueError, match="act on page images"):
    augment.parse("rotate(2)").apply(jnp.zeros((1, 8, 13)), jax.random.key(0))
  for spec in SIGNAL_AUGMENTATIONS.values():
    assert augment.parse(spec).on_signals and not augment.parse("rotate(2)").on_signals
