"""Where things are on a 12-lead ECG page: the one layout shared by the renderer and by saliency.

The numbers are measured on the pages of the real release (see the sample's README,
`../shared/data/ecg_images_sample/README.md` beside the repository): every page there has the same
geometry, so the synthetic renderer (`ecgjax.data.synth`) draws on this layout, both TFDS builders crop the same
`panel_box`, and saliency sums attributions per lead with `lead_boxes()`, which are given as fractions
of the cropped grid panel and therefore hold for the model input of real and synthetic pages alike.

This module holds geometry only (pixels, mm, seconds); colours, fonts and noise belong to the renderer.
"""

from __future__ import annotations

import dataclasses

# The standard 3 x 4 report: each row shows four leads, each for 2.5 s of the same 10 s recording.
LEAD_GRID: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RHYTHM = "rhythm"  # The key of the rhythm strip in `lead_boxes`.


@dataclasses.dataclass(frozen=True)
class PageLayout:
  """Pixel geometry of a page (defaults: the real release, 2213 x 1572 px at about 200 dpi).

  Boxes are (left, top, right, bottom) in PIL's convention (right and bottom exclusive).
  """
  page_size: tuple[int, int] = (2213, 1572)  # (width, height)
  # The dotted grid panel; measured: first/last panel column 71/2172, row 287/1510.
  panel_box: tuple[int, int, int, int] = (71, 287, 2173, 1511)
  header_height: int = 250  # The pink band with logo and title above the panel.
  # 4 columns of 2.5 s span 1968 px between the separators at 644, 1136, 1628: 7.872 px/mm.
  px_per_mm: float = 7.872
  mm_per_s: float = 25.0
  mm_per_mv: float = 10.0
  trace_left: float = 152.0  # x of t = 0 in every row.
  # y of 0 mV in the three lead rows and the rhythm strip (bottom of the calibration pulses).
  baselines: tuple[float, ...] = (463.5, 763.0, 1065.5, 1366.0)
  # Calibration pulse: x of foot start, rising edge, falling edge, foot end.
  cal_x: tuple[float, float, float, float] = (95.0, 105.0, 122.0, 132.0)
  # Column separators run from the first row's baseline minus this to the third's plus this.
  separator_overhang: tuple[float, float] = (43.5, 42.5)
  label_offset: tuple[float, float] = (2.0, -7.0)  # Label's bottom-left from (column x, baseline).
  duration_s: float = 10.0
  columns: int = 4

  @property
  def px_per_s(self) -> float:
    return self.px_per_mm * self.mm_per_s

  @property
  def px_per_mv(self) -> float:
    return self.px_per_mm * self.mm_per_mv

  @property
  def column_s(self) -> float:
    return self.duration_s / self.columns

  def column_x(self, column: int) -> float:
    """x of the start of a 2.5 s column (column 4 is the right end of the traces)."""
    return self.trace_left + column * self.column_s * self.px_per_s

  def separators(self) -> list[tuple[float, float, float]]:
    """(x, y_top, y_bottom) of the vertical lines between columns."""
    top = self.baselines[0] - self.separator_overhang[0]
    bottom = self.baselines[len(LEAD_GRID) - 1] + self.separator_overhang[1]
    return [(self.column_x(c), top, bottom) for c in range(1, self.columns)]

  def scaled(self, factor: float) -> PageLayout:
    """The same page at another resolution (for example 0.5 for a 1106 px wide page)."""
    s = float(factor)
    return dataclasses.replace(
        self,
        page_size=(round(self.page_size[0] * s), round(self.page_size[1] * s)),
        panel_box=tuple(round(v * s) for v in self.panel_box),
        header_height=round(self.header_height * s),
        px_per_mm=self.px_per_mm * s,
        trace_left=self.trace_left * s,
        baselines=tuple(v * s for v in self.baselines),
        cal_x=tuple(v * s for v in self.cal_x),
        separator_overhang=tuple(v * s for v in self.separator_overhang),
        label_offset=tuple(v * s for v in self.label_offset),
    )

  def validate(self) -> None:
    w, h = self.page_size
    l, t, r, b = self.panel_box
    if not (0 <= l < r <= w and 0 <= t < b <= h):
      raise ValueError(f"panel_box {self.panel_box} does not fit in page_size {self.page_size}.")
    if self.column_x(self.columns) > r or self.baselines[-1] > b or self.baselines[0] < t:
      raise ValueError(f"Traces of layout {self} fall outside its panel_box {self.panel_box}.")


REAL_LAYOUT = PageLayout()


def lead_boxes_px(layout: PageLayout = REAL_LAYOUT) -> dict[str, tuple[float, float, float, float]]:
  """Page-pixel box (left, top, right, bottom) of each lead's trace and of the rhythm strip.

  A row's band reaches halfway to the neighbouring rows (and to the panel edge for the first and
  last); a lead's columns are its 2.5 s, so the calibration pulses belong to no lead.
  """
  _, panel_top, _, panel_bottom = layout.panel_box
  b = layout.baselines
  edges = [panel_top] + [(b[i] + b[i + 1]) / 2 for i in range(len(b) - 1)] + [panel_bottom]
  boxes = {}
  for row, leads in enumerate(LEAD_GRID):
    for col, lead in enumerate(leads):
      boxes[lead] = (layout.column_x(col), edges[row], layout.column_x(col + 1), edges[row + 1])
  boxes[RHYTHM] = (layout.column_x(0), edges[-2], layout.column_x(layout.columns), edges[-1])
  return boxes


def lead_boxes(layout: PageLayout = REAL_LAYOUT) -> dict[str, tuple[float, float, float, float]]:
  """Box of each lead and of `RHYTHM` as fractions (left, top, right, bottom) of the grid panel.

  Multiply by the model input's width and height to get pixel boxes on a cropped, resized panel.
  """
  l, t, r, b = layout.panel_box
  w, h = r - l, b - t
  return {name: ((x0 - l) / w, (y0 - t) / h, (x1 - l) / w, (y1 - t) / h)
          for name, (x0, y0, x1, y1) in lead_boxes_px(layout).items()}
