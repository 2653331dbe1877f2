"""Pages as signals: the page view, each data set's path to it, the cache, the config checks, and
the real trainer on signals (ecg_signals_sim/tiny and ecg_synth/tiny, digitized)."""

import os

import numpy as np
import pytest
from PIL import Image

from configs import signals as signals_config
from ecgjax import digitize
from ecgjax import predict
from ecgjax import train
from ecgjax import validate
from ecgjax.classes import CLASS_NAMES
from ecgjax.data import digitized
from ecgjax.data import pipeline
from ecgjax.data import synth
from ecgjax.data.layout import LEADS

def test_page_view_masks_centres_and_downsamples():
  t = np.arange(5000) / 500
  signals = np.stack([np.sin(2 * np.pi * (k + 1) * t) + 3.0 + k for k in range(12)]).astype(np.float32)
  rhythm = signals[1] * 1.0
  view = digitized.page_view(signals, rhythm, hz=125)
  assert view.shape == (1250, 13) and view.dtype == np.float32
  blocks = digitize.shown_mask(5000).reshape(12, 1250, 4)  # The samples each output averages.
  shown = blocks.all(-1)
  # Outside its window a lead is 0; inside, its offset is gone (centred on its median).
  assert np.all(view[:, :12].T[~blocks.any(-1)] == 0)
  offsets = 3.0 + np.arange(12, dtype=np.float32)[:, None]
  np.testing.assert_allclose(view, digitized.page_view(signals - offsets, rhythm - 4.0), atol=1e-5)
  for k in range(12):
    inside = view[shown[k], k]
    assert abs(np.median(inside)) < 0.1 and np.ptp(inside) > 1.5
  # The strip covers all 10 s; averaging 4 samples keeps a 1 Hz sine.
  np.testing.assert_allclose(view[:, 12], np.sin(2 * np.pi * 2 * t[::4]), atol=0.05)
  # Unread samples (NaN) are 0, and a lead never read is 0 throughout.
  signals[0, :100] = np.nan
  signals[5] = np.nan
  view = digitized.page_view(signals, rhythm, hz=250)
  assert view.shape == (2500, 13) and np.isfinite(view).all()
  assert np.all(view[:50, 0] == 0) and np.all(view[:, 5] == 0)


def test_rates_that_do_not_divide_500_hz_are_refused():
  with pytest.raises(ValueError, match="signal_hz"):
    digitized.check_rate(300)
  with pytest.raises(ValueError, match="Expected"):
    digitized.page_view(np.zeros((12, 4000)), np.zeros(4000))


def test_simulated_view_is_the_record_as_a_page_shows_it():
  view = digitized.simulated_view("mi", 7)
  np.testing.assert_array_equal(view, digitized.simulated_view("mi", 7))  # Seeded.
  record = synth.simulate("mi", 7)
  shown = digitize.shown_mask(5000)
  expected = digitized.page_view(np.where(shown, record.signals, 0.0), record.lead("II"))
  np.testing.assert_allclose(view[:, :12], expected[:, :12], atol=1e-5)
  strip = view[:, 12]
  assert max(np.corrcoef(strip, expected[:, 12])[0, 1],
             np.corrcoef(strip, digitized.page_view(record.signals, record.lead("III"))[:, 12]
                         )[0, 1]) > 0.999


def test_digitized_view_of_a_rendered_page_matches_its_record():
  record = synth.simulate("normal", 3)
  page = synth.render(record, 3)
  view = digitized.digitized_view(page)
  truth = digitized.page_view(record.signals, record.lead("II"))
  shown = digitize.shown_mask(5000)[:, ::4]
  r = [np.corrcoef(view[shown[k], k], truth[shown[k], k])[0, 1] for k in range(len(LEADS))]
  assert np.median(r) > 0.9, r


def test_preprocess_needs_manual_dir_for_real_pages():
  config = signals_config.get_config()
  config.dataset.name = "ecg_images"
  example = {"label": 1, "source_path": b"Normal Person ECG Images/Normal(1).jpg"}
  with pytest.raises(ValueError, match="manual_dir"):
    digitized.Preprocess(config).map(example)
  config.dataset.manual_dir = "/nonexistent"
  with pytest.raises(FileNotFoundError, match="Normal"):
    digitized.Preprocess(config).map(example)
  sim = digitized.Preprocess(config).map({"label": 2, "source_path": b"sim:mi:11"})
  np.testing.assert_array_equal(sim["image"], digitized.simulated_view(2, 11))


@pytest.mark.parametrize("change, field", [
    ({"model.name": "cnn"}, "model.name"),
    ({"data.augment": "rotate(2)"}, "data.augment"),
    ({"saliency.method": "grad_cam"}, "saliency.method"),
    ({"data.signal_hz": 300}, "signal_hz"),
    ({"data.input": "text"}, "data.input"),
    ({"data.input": "image"}, "model.name"),
])
def test_config_checks(change, field):
  config = signals_config.get_config("smoke")
  for key, value in change.items():
    group, name = key.split(".")
    config[group][name] = value
  with pytest.raises(validate.ConfigError, match=field):
    validate.check(config)


def test_signal_runs_take_signal_augmentation_and_page_runs_page_augmentation():
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  config = signals_config.get_config("smoke")
  config.data.augment = "amplitude(0.2)|time_shift(0.01)|signal_noise(0.03)|drop_leads(0.1)"
  validate.check(config)
  page = cnn_small.get_config("smoke")
  page.data.augment = "amplitude(0.2)"
  with pytest.raises(validate.ConfigError, match="data.augment.*digitized leads"):
    validate.check(page)


def test_image_models_cannot_use_the_signal_only_data_set():
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  config.dataset.name = "ecg_signals_sim"
  with pytest.raises(validate.ConfigError, match="dataset.name"):
    validate.check(config)


def _signals_config(data_dir, name):
  config = signals_config.get_config("smoke")
  config.dataset.name = name
  config.dataset.data_dir = data_dir
  return config


def test_train_and_evaluate_on_simulated_signals(tmp_path):
  config = _signals_config(str(tmp_path / "tfds"), "ecg_signals_sim")
  report = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert report["num_examples"] == 4 and 0.0 <= report["macro_f1"] <= 1.0
  assert report["dataset"].startswith("ecg_signals_sim/tiny")
  folder = os.path.join(str(tmp_path / "tfds"), "ecg_signals_sim", "tiny", "1.0.0", "decoded")
  (key,) = os.listdir(folder)
  assert key.startswith("signals_125hz_")
  cached = np.load(os.path.join(folder, key, "fold0.npy"))
  assert cached.shape == (4, 1250, 13) and cached.dtype == np.float32
  # `ecgjax.predict` feeds a signal model the digitized page, not its pixels.
  page = str(tmp_path / "page.png")
  Image.fromarray(synth.render(synth.simulate("normal", 5), 5)).save(page)
  (result,) = predict.predict_files(str(tmp_path / "run"), [page])
  assert "error" not in result and result["note"] == "whole page digitized"
  assert result["class"] in CLASS_NAMES
  # Fine-tuning starts from it: every parameter has the same name and shape.
  again = _signals_config(str(tmp_path / "tfds"), "ecg_signals_sim")
  again.init_from = str(tmp_path / "run")
  assert train.train_and_evaluate(again, str(tmp_path / "ft"))["num_examples"] == 4


def test_synthetic_pages_are_digitized_from_the_page_behind_the_panel(tfds_data_dir):
  config = _signals_config(tfds_data_dir, "ecg_synth")
  source = pipeline.Source(pipeline.dataset_builder(config.dataset), ("fold0",))
  loaded = pipeline.load(source, config)
  batch = loaded.gather(np.arange(len(source)))
  assert batch["image"].shape == (len(source), 1250, 13) and batch["image"].dtype == np.float32
  shown = digitize.shown_mask(5000)[:, ::4]
  for i in range(len(source)):
    _, label, seed = source[i]["source_path"].decode().split(":")
    truth = synth.simulate(label, int(seed)).signals
    r = [np.corrcoef(batch["image"][i][shown[k], k], truth[k, ::4][shown[k]])[0, 1]
         for k in range(len(LEADS))]
    assert np.median(r) > 0.9, (i, r)
    # Read off the page, not copied from the record: the digitizer's error is there.
    assert np.abs(batch["image"][i] - digitized.simulated_view(label, int(seed))).max() > 0.02
