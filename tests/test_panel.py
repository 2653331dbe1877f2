"""Tests of the grid-panel detector on real pages, moved, rotated and shrunk, and on white paper."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ecgjax.data import panel

from sample_data import SAMPLE_DIR as SAMPLE
# The panel of every release page, from the sample's README (rows 287-1510, columns 71-2172).
README_BOX = panel.Box(top=287, left=71, bottom=1511, right=2173)
PINK = (248, 162, 171)


def _pages() -> list[pathlib.Path]:
  return sorted(SAMPLE.glob("*/*.jpg"))


def _load(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def _assert_close(box: panel.Box, expected: panel.Box, tol: int) -> None:
  got = np.array([box.top, box.left, box.bottom, box.right])
  want = np.array([expected.top, expected.left, expected.bottom, expected.right])
  assert np.abs(got - want).max() <= tol, f"found {box}, expected {expected} within {tol} px"


def test_sample_is_present():
  assert len(_pages()) == 18, f"expected the 18-file sample in {SAMPLE}"


@pytest.mark.parametrize("index", [0, 5, 9, 12])
def test_finds_the_readme_panel_on_release_pages(index):
  _assert_close(panel.find_panel(_load(_pages()[index])), README_BOX, tol=4)


def test_other_margins_move_the_box():
  page = _load(_pages()[0])
  # Cut 40 px off the right, add 300 px of paper on the left and 50 on top.
  moved = np.empty((page.shape[0] + 50, page.shape[1] + 260, 3), np.uint8)
  moved[...] = PINK
  moved[50:, 300:] = page[:, :-40]
  expected = panel.Box(README_BOX.top + 50, README_BOX.left + 300, README_BOX.bottom + 50,
                       README_BOX.right + 300)
  _assert_close(panel.find_panel(moved), expected, tol=4)


def test_scales_with_the_scan_resolution():
  page = Image.fromarray(_load(_pages()[1])).resize((1024, 727), Image.Resampling.BILINEAR)
  s = 1024 / 2213
  expected = panel.Box(round(README_BOX.top * s), round(README_BOX.left * s),
                       round(README_BOX.bottom * s), round(README_BOX.right * s))
  _assert_close(panel.find_panel(np.asarray(page)), expected, tol=3)


def test_slightly_rotated_page_gives_the_rotated_panels_bounds():
  page = Image.fromarray(_load(_pages()[2]))
  angle = 2.0
  rotated = np.asarray(page.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=PINK))
  # Corners of the README panel rotated about the page centre (PIL: anticlockwise on screen).
  cx, cy = page.width / 2, page.height / 2
  t = np.deg2rad(angle)
  xs, ys = [], []
  for x, y in [(README_BOX.left, README_BOX.top), (README_BOX.right, README_BOX.top),
               (README_BOX.right, README_BOX.bottom), (README_BOX.left, README_BOX.bottom)]:
    xs.append(cx + (x - cx) * np.cos(t) + (y - cy) * np.sin(t))
    ys.append(cy - (x - cx) * np.sin(t) + (y - cy) * np.cos(t))
  expected = panel.Box(round(min(ys)), round(min(xs)), round(max(ys)), round(max(xs)))
  _assert_close(panel.find_panel(rotated), expected, tol=10)


def test_pink_grid_on_white_paper():
  page = Image.new("RGB", (1100, 800), "white")
  draw = ImageDraw.Draw(page)
  draw.rectangle((100, 30, 700, 60), fill="black")  # a header line of text
  top, left, bottom, right = 200, 60, 700, 1040
  for x in range(left, right, 8):
    draw.line((x, top, x, bottom - 1), fill=(240, 150, 160), width=3 if x % 40 == left % 40 else 1)
  for y in range(top, bottom, 8):
    draw.line((left, y, right - 1, y), fill=(240, 150, 160), width=3 if y % 40 == top % 40 else 1)
  draw.line([(left + 10 * i, 450 + (40 if i % 9 == 0 else 0)) for i in range(97)], fill="black",
            width=2)
  _assert_close(panel.find_panel(np.asarray(page)), panel.Box(top, left, bottom, right), tol=4)


def test_grey_input():
  grey = np.asarray(Image.fromarray(_load(_pages()[3])).convert("L"))[..., None]
  _assert_close(panel.find_panel(grey), README_BOX, tol=4)


def test_crop_panel_is_the_box():
  page = _load(_pages()[4])
  box = panel.find_panel(page)
  crop = panel.crop_panel(page)
  assert crop.shape == (box.height, box.width, 3)
  # The crop is the white panel, not the pink page: red and green are close on average.
  red_minus_green = crop[..., 0].astype(float).mean() - crop[..., 1].astype(float).mean()
  assert red_minus_green < 20, red_minus_green


def test_blank_page_is_an_error_naming_the_file():
  with pytest.raises(ValueError, match="blank.jpg: no ECG grid panel"):
    panel.find_panel(np.full((300, 400, 3), PINK, np.uint8), source="blank.jpg")


def test_small_blob_is_not_a_panel():
  page = np.full((400, 600, 3), PINK, np.uint8)
  page[10:60, 10:80] = 255  # a logo, not a panel
  with pytest.raises(ValueError, match="logo.jpg: no ECG grid panel"):
    panel.find_panel(page, source="logo.jpg")
