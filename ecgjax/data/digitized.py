"""Pages as signals: each example's twelve leads and rhythm strip, the input of the 1-D models.

With `config.data.input='signals'` a run reads every example once through `Preprocess` here instead
of `pipeline.Preprocess`, and `decoded.load` caches the result beside the data set exactly as it
caches decoded pages (``decoded/signals_<hz>hz_<digest>/``, the digest covering the digitizer, the
simulator and `VIEW_VERSION`, so changing any of them reads the pages again). What an example is
read from depends on the data set, named by its `source_path`:

- `ecg_images` (a path under `config.dataset.manual_dir`): the original page file, digitized
  (`ecgjax.digitize`). The builders store only the resized grid panel; the digitizer wants the
  whole page at its own resolution, so the run needs `manual_dir`.
- `ecg_synth` ("synth:<class>:<seed>"): the very page the stored panel was cut from, rendered again
  from its seed and digitized, so the signals carry the digitizer's errors as real pages do.
- `ecg_signals_sim` ("sim:<class>:<seed>"): the simulated record itself (`synth.simulate`), never
  rendered: cheap, unlimited pre-training data.

Every source ends in the same array, `page_view`: (time, 13) float32 in mV at `config.data.signal_hz`,
channel k < 12 lead `LEADS[k]` during the 2.5 s the 3 x 4 page shows it and 0 elsewhere (a
simulated record is masked the same way), channel 12 the 10 s rhythm strip; each lead's shown part
is centred on its median, since the page's baseline (digitized from the calibration pulse) and the
simulator's (wander) are not comparable. A sample the digitizer could not read is 0.

Not here: the digitizer itself (`ecgjax.digitize`), the models (`ecgjax.models.resnet1d`), batching.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import ml_collections
import numpy as np

from ecgjax import digitize
from ecgjax.data.layout import LEADS

FS = 500  # Rate of the digitizer's and the simulator's output (Hz).
NUM_SAMPLES = 5000  # 10 s at FS.
CHANNELS = len(LEADS) + 1  # The twelve leads and the rhythm strip.
# Changes whenever `page_view` changes what it returns, so that older caches are not reused.
VIEW_VERSION = 1


def check_rate(hz: int) -> int:
  """`config.data.signal_hz`, checked: it must divide 500 Hz into whole samples."""
  if isinstance(hz, bool) or not isinstance(hz, int) or hz <= 0 or FS % hz:
    raise ValueError(f"config.data.signal_hz={hz!r}: use a divisor of {FS} (e.g. 125, 250, 500).")
  return hz


def page_view(signals: np.ndarray, rhythm: np.ndarray, hz: int = 125) -> np.ndarray:
  """(12, 5000) leads and (5000,) rhythm strip at 500 Hz -> (5000 * hz / 500, 13) float32.

  Samples outside each lead's shown window are dropped whatever they hold (NaN from the digitizer,
  the rest of the recording from the simulator); each lead's window and the strip are centred on
  their median; unread (NaN) samples become 0; then averaged down to `hz`.
  """
  signals = np.asarray(signals, np.float64)
  rhythm = np.asarray(rhythm, np.float64)
  if signals.shape != (len(LEADS), NUM_SAMPLES) or rhythm.shape != (NUM_SAMPLES,):
    raise ValueError(f"Expected (12, {NUM_SAMPLES}) leads and a ({NUM_SAMPLES},) rhythm strip, got "
                     f"{signals.shape} and {rhythm.shape}.")
  factor = FS // check_rate(hz)
  shown = np.where(digitize.shown_mask(NUM_SAMPLES), signals, np.nan)
  x = np.concatenate([shown, rhythm[None]], axis=0)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # The median of an unread (all-NaN) lead.
    x = x - np.nanmedian(x, axis=1, keepdims=True)
  x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
  x = x.reshape(CHANNELS, NUM_SAMPLES // factor, factor).mean(axis=2)
  return np.ascontiguousarray(x.T, np.float32)


def simulated_view(label: int | str, seed: int, hz: int = 125) -> np.ndarray:
  """`page_view` of the record `synth.simulate(label, seed)`, its strip lead drawn by seed from the
  renderer's choices (II or III), as on a rendered page."""
  from ecgjax.data import synth  # pylint: disable=g-import-not-at-top
  record = synth.simulate(label, seed)
  lead = synth.DEFAULT_STYLE.rhythm_leads[
      np.random.default_rng([seed, 71]).integers(len(synth.DEFAULT_STYLE.rhythm_leads))]
  return page_view(record.signals[:, :NUM_SAMPLES], record.lead(lead)[:NUM_SAMPLES], hz)


def digitized_view(page, hz: int = 125) -> np.ndarray:
  """`page_view` of a whole page (RGB array or file path), digitized."""
  d = digitize.digitize(page)
  return page_view(d.signals, d.rhythm, hz)


def _source_digest() -> str:
  """What the arrays depend on besides the data: the digitizer's, the simulator's and this code."""
  from ecgjax.data import synth  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha1(f"view{VIEW_VERSION}".encode())
  for module in (digitize, synth):
    with open(module.__file__, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()[:10]


class Preprocess:
  """An example of any ecgjax data set -> {"image": (time, 13) float32 signals, "label"}.

  The batch key stays "image" (the trainer's name for the model input) so that every step, cache
  and padding path is the one the page models use.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.hz = check_rate(config.data.signal_hz)
    self.manual_dir = config.dataset.get("manual_dir") or None
    self.dataset = config.dataset.name
    self.spec = f"signals(hz={self.hz})"
    self.key = f"signals_{self.hz}hz_{_source_digest()}"
    self.output_shape = (NUM_SAMPLES * self.hz // FS, CHANNELS)
    self.dtype = np.float32

  def map(self, example) -> dict[str, np.ndarray]:
    label = int(example["label"])
    source = example.get("source_path", b"")
    source = source.decode() if isinstance(source, bytes) else str(source)
    return {"image": self.signals(source, label), "label": np.int32(label)}

  def signals(self, source: str, label: int) -> np.ndarray:
    page = self.page(source, label)
    if page is None:  # A simulated record: no page to digitize.
      return simulated_view(label, int(source.rpartition(":")[2]), self.hz)
    try:
      return digitized_view(page, self.hz)
    except Exception as e:
      raise ValueError(f"{page if isinstance(page, str) else source}: cannot be digitized "
                       f"({e}).") from e

  def page(self, source: str, label: int) -> np.ndarray | str | None:
    """The whole page an example was read from: the file's path under `manual_dir`
    (`ecg_images`), the page rendered again from its seed (`ecg_synth`, an RGB array), or None for
    a simulated record (`ecg_signals_sim`), which no page shows."""
    kind, _, rest = source.partition(":")
    if kind == "sim":
      return None
    if kind == "synth":
      from ecgjax.data import synth  # pylint: disable=g-import-not-at-top
      seed = int(rest.rpartition(":")[2])
      return synth.render(synth.simulate(label, seed), seed)
    if self.manual_dir is None:
      raise ValueError(
          f"config.data.input='signals' digitizes the original pages of {self.dataset!r} (the data "
          "set stores only a resized panel): set config.dataset.manual_dir to the folder the data "
          f"set was built from (it holds {source!r}).")
    path = os.path.join(os.path.expanduser(self.manual_dir), source)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: page {source!r} of {self.dataset!r} is not under "
                              f"config.dataset.manual_dir={self.manual_dir!r}; is it the folder the "
                              "data set was built from?")
    return path
