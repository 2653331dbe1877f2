"""The host ops that turn a decoded page into the model's input: resize, grid removal, grayscale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ecgjax.data import transforms


def _run(spec: str, image: np.ndarray) -> np.ndarray:
  return transforms.apply(transforms.parse(spec), image, np.random.default_rng(0))


def test_registered_ops_and_empty_spec():
  assert set(transforms.available()) == {"resize", "remove_grid", "grayscale", "leads"}
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
                        ("resize(1, 2, 3, 4, 5, 6)", "bad arguments for 'resize'"),
                        ("resize(a=)", "bad arguments")]:
    with pytest.raises(ValueError, match=message):
      transforms.parse(spec)


def _trace_page(height=300, width=600, grid_value=190):
  """White paper, grid dots every 8 px at `grid_value`, a 2 px black trace along row 150."""
  page = np.full((height, width, 3), 255, np.uint8)
  page[::8, ::8] = grid_value
  page[150:152, :] = 5
  return page


def test_min_pool_keeps_a_thin_trace_dark_where_bilinear_greys_it():
  page = _trace_page()
  bilinear = _run("resize(60, 120)|grayscale", page)[..., 0]
  pooled = _run("resize(60, 120, method='min_pool')|grayscale", page)[..., 0]
  assert bilinear.min(axis=0).max() > 100  # Shrunk 5x, the 2 px line averages to grey...
  assert (pooled.min(axis=0) <= 5).all()  # ...min-pooled it stays black in every column,
  assert (pooled < 60).sum(axis=0).max() == 1  # and one pixel thick.
  assert (pooled == 190).mean() > 0.3  # Grid dots darken the page as much: hence `remove_grid`.
  clean = _run("remove_grid|resize(60, 120, method='min_pool')|grayscale", page)[..., 0]
  assert (clean.min(axis=0) <= 5).all() and ((clean == 255) | (clean <= 5)).all()
  np.testing.assert_array_equal(transforms.min_pool(page, 300, 600), page)  # Same size: as is.


def test_min_pool_blocks_cover_the_source_once():
  image = np.random.default_rng(2).integers(0, 256, (7, 10, 1), dtype=np.uint8)
  out = transforms.min_pool(image, 3, 4)
  # Rows dealt as [0, 1], [2, 3], [4, 5, 6]; columns as [0, 1], [2, 3, 4], [5, 6], [7, 8, 9].
  assert out[2, 1, 0] == image[4:7, 2:5, 0].min() and out[0, 3, 0] == image[0:2, 7:10, 0].min()
  with pytest.raises(ValueError, match="shrinks"):
    transforms.min_pool(image, 8, 10)
  grown = _run("resize(14, 20, mode='stretch', method='min_pool')", image)
  assert grown.shape == (14, 20, 1)  # An axis that grows is resized bilinearly instead.


@pytest.mark.parametrize("grid_value", [190, 235])
def test_remove_grid_keeps_the_trace_on_white(grid_value):
  page = _trace_page(grid_value=grid_value)
  page[::8, ::8] = (250, grid_value, grid_value)  # Red-tinted dots: luminance well above ink.
  clean = _run("remove_grid", page)
  assert clean.shape == page.shape
  assert (clean[150:152] <= 5).all()  # The trace stays black,
  rest = np.delete(clean, [150, 151], axis=0)
  assert (rest == 255).all()  # grid dots and paper become white,
  assert (clean[..., 0] == clean[..., 2]).all()  # in grey.
  with pytest.raises(ValueError, match="ink < paper"):
    transforms.parse("remove_grid(ink=200, paper=100)")


def test_leads_cuts_the_panel_along_the_layout_into_channels():
  """Each lead's box painted its own grey: channel k is lead k's box (LEADS order), then the rhythm
  strip's four quarters, each stretched to the op's size."""
  from ecgjax.data import layout  # pylint: disable=g-import-not-at-top
  h, w = 373, 640  # A w640 panel.
  panel = np.full((h, w, 1), 255, np.uint8)
  boxes = layout.lead_boxes()
  values = {}
  for k, name in enumerate((*layout.LEADS, layout.RHYTHM)):
    x0, y0, x1, y1 = boxes[name]
    values[name] = 10 + 10 * k
    panel[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = values[name]
  out = _run("leads(20, 36)", panel)
  assert out.shape == (20, 36, transforms.LEAD_CHANNELS) and out.dtype == np.uint8
  expected = [values[name] for name in layout.LEADS] + [values[layout.RHYTHM]] * 4
  assert [int(np.median(out[..., c])) for c in range(out.shape[-1])] == expected
  # RGB panels keep their channels per lead, in order.
  rgb = _run("leads(20, 36)", np.repeat(panel, 3, axis=-1))
  assert rgb.shape == (20, 36, 3 * transforms.LEAD_CHANNELS)
  np.testing.assert_array_equal(rgb[..., 3:6], np.repeat(out[..., 1:2], 3, axis=-1))
  # min_pool keeps a 1 px trace inside a lead box dark.
  x0, y0, x1, y1 = boxes["V2"]
  trace = np.full((h, w, 1), 255, np.uint8)
  trace[round((y0 + y1) / 2 * h), round(x0 * w) + 2:round(x1 * w) - 2] = 0
  assert _run("leads(20, 36, method='min_pool')", trace)[..., layout.LEADS.index("V2")].min() == 0
