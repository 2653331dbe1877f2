"""The input pipeline over a built data set: folds, batches, determinism, resumable state."""

import io

import numpy as np
import pytest
from PIL import Image

from ecgjax.data import decoded
from ecgjax.data import pipeline


def _source(config, splits):
  return pipeline.Source(pipeline.dataset_builder(config.dataset), splits)


def _decoded(config, splits):
  return decoded.load(_source(config, splits), config.data)


def test_fold_splits_partition_the_folds(smoke_config):
  smoke_config.data.test_fold, smoke_config.data.val_fold = 3, 0
  s = pipeline.fold_splits(smoke_config.data)
  assert s.test == ("fold3",) and s.val == ("fold0",)
  assert s.train == ("fold1", "fold2", "fold4")
  smoke_config.data.val_fold = 3
  with pytest.raises(ValueError, match="val_fold=3"):
    pipeline.fold_splits(smoke_config.data)
  smoke_config.data.test_fold = 5
  with pytest.raises(ValueError, match="test_fold=5"):
    pipeline.fold_splits(smoke_config.data)


@pytest.mark.parametrize("test_fold,val_fold,train,val,test", [
    (None, None, (0, 1, 2, 3, 4), (), ()),  # A final model: every fold trains.
    (None, 2, (0, 1, 3, 4), (2,), ()),
    (3, None, (0, 1, 2, 4), (), (3,)),
])
def test_fold_splits_without_a_test_or_validation_fold(smoke_config, test_fold, val_fold, train,
                                                       val, test):
  smoke_config.data.test_fold, smoke_config.data.val_fold = test_fold, val_fold
  s = pipeline.fold_splits(smoke_config.data)
  assert s == pipeline.Splits(train=tuple(f"fold{i}" for i in train),
                              val=tuple(f"fold{i}" for i in val),
                              test=tuple(f"fold{i}" for i in test))


@pytest.mark.parametrize("field,value", [
    ("test_fold", "0"), ("test_fold", 1.0), ("test_fold", True), ("val_fold", "none"),
    ("val_fold", -1)])
def test_fold_splits_refuse_what_is_not_a_fold_or_none(smoke_config, field, value):
  smoke_config.data[field] = value
  with pytest.raises(ValueError, match=f"config.data.{field}={value!r}: use a fold 0..4, or None"):
    pipeline.fold_splits(smoke_config.data)


def test_eval_batches_cover_every_example_once(smoke_config):
  source = _source(smoke_config, ("fold0", "fold1"))
  batches = list(pipeline.eval_batches(decoded.load(source, smoke_config.data),
                                       local_batch_size=3))
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])[mask]
  assert mask.sum() == len(source)
  np.testing.assert_array_equal(labels, source.labels())
  # The decoded pages are the records decoded and preprocessed, in order.
  images = np.concatenate([b["image"] for b in batches])[mask]
  preprocess = pipeline.Preprocess(smoke_config.data)
  for i in (0, len(source) - 1):
    np.testing.assert_array_equal(images[i], preprocess.map(source[i])["image"])
  h, w = smoke_config.data.image_size
  c = 1 if smoke_config.data.grayscale else 3
  assert all(b["image"].shape == (3, h, w, c) and b["image"].dtype == np.uint8 for b in batches)


def test_eval_batches_split_over_processes(smoke_config):
  source = _decoded(smoke_config, ("fold0",))
  seen = []
  counts = set()
  for p in range(3):
    batches = list(pipeline.eval_batches(source, local_batch_size=2, process_index=p,
                                         process_count=3))
    counts.add(len(batches))
    seen.append(np.concatenate([b["label"][b["mask"]] for b in batches]))
  assert len(counts) == 1  # Every process runs the same number of steps.
  assert sum(len(s) for s in seen) == len(source)


def test_eval_order_names_the_example_of_every_row_of_the_global_batches(smoke_config):
  source = _decoded(smoke_config, ("fold0", "fold1"))
  per_process = [list(pipeline.eval_batches(source, local_batch_size=2, process_index=p,
                                            process_count=3)) for p in range(3)]
  # A global batch is the processes' local batches side by side, process 0's first.
  rows = np.concatenate([np.concatenate([batches[b]["image"] for batches in per_process])
                         for b in range(len(per_process[0]))])
  order = pipeline.eval_order(len(source), local_batch_size=2, process_count=3)
  assert len(order) == len(rows) and sorted(order[order >= 0]) == list(range(len(source)))
  for row, index in zip(rows, order):
    if index >= 0:
      np.testing.assert_array_equal(row, source.gather(np.array([index]))["image"][0])


def test_train_stream_is_seeded_reshuffled_and_resumable(smoke_config):
  source = _decoded(smoke_config, ("fold1", "fold2", "fold3"))
  n = len(source)

  def stream(seed):
    return iter(pipeline.train_dataset(source, smoke_config.data, local_batch_size=n, seed=seed))

  a, b, c = stream(0), stream(0), stream(1)
  epoch1, epoch2 = next(a), next(a)
  np.testing.assert_array_equal(epoch1["image"], next(b)["image"])
  assert not np.array_equal(epoch1["image"], next(c)["image"])
  # Each epoch holds every example once, in a new order.
  assert sorted(epoch1["label"]) == sorted(epoch2["label"]) == sorted(source.labels)
  assert not np.array_equal(epoch1["image"], epoch2["image"])
  # The iterator state restores the exact continuation.
  small = iter(pipeline.train_dataset(source, smoke_config.data, local_batch_size=4, seed=0))
  next(small)
  state = small.get_state()
  expected = next(small)
  fresh = iter(pipeline.train_dataset(source, smoke_config.data, local_batch_size=4, seed=0))
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)["image"], expected["image"])


def test_balanced_sampling_draws_every_class_equally_often(smoke_config):
  labels = np.repeat([0, 1, 2], [160, 30, 10])  # As skewed as the release (mi: 6%).
  shuffled = pipeline.ShuffledBatches(len(labels), 20, seed=0)
  balanced = pipeline.ShuffledBatches(len(labels), 20, seed=0, labels=labels)
  assert balanced.per_epoch == shuffled.per_epoch == 10  # Epochs as long as without.
  drawn = np.concatenate([balanced[k] for k in range(200 * balanced.per_epoch)])
  share = np.bincount(labels[drawn], minlength=3) / len(drawn)
  np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.01)
  plain = np.concatenate([shuffled[k] for k in range(20 * shuffled.per_epoch)])
  np.testing.assert_allclose(np.bincount(labels[plain]) / len(plain), [0.8, 0.15, 0.05])
  # Seeded per epoch, the same in every process: two processes' halves are one global batch.
  halves = [pipeline.ShuffledBatches(len(labels), 10, 0, p, 2, labels=labels)[7] for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate(halves), balanced[7])
  assert not np.array_equal(balanced[7], balanced[7 + balanced.per_epoch])
  # Through the pipeline, on real decoded pages: with replacement, so not each page once.
  source = _decoded(smoke_config, ("fold1", "fold2", "fold3"))
  smoke_config.data.sampling = "balanced"
  batch = next(iter(pipeline.train_dataset(source, smoke_config.data,
                                           local_batch_size=len(source), seed=0)))
  assert sorted(batch["label"]) != sorted(source.labels)
  smoke_config.data.sampling = "random"
  with pytest.raises(ValueError, match="config.data.sampling='random'"):
    pipeline.train_dataset(source, smoke_config.data, local_batch_size=4, seed=0)


def test_worker_processes_give_the_same_batches(smoke_config):
  source = _decoded(smoke_config, ("fold1",))
  inline = iter(pipeline.train_dataset(source, smoke_config.data, local_batch_size=2, seed=3))
  smoke_config.data.worker_count = 2
  workers = iter(pipeline.train_dataset(source, smoke_config.data, local_batch_size=2, seed=3))
  for _ in range(3):
    np.testing.assert_array_equal(next(inline)["image"], next(workers)["image"])
  workers.close()


def test_preprocess_keeps_aspect_with_white_padding(smoke_config):
  page = np.zeros((100, 400, 3), np.uint8)  # Black, 4:1, into a 48x80 input.
  buf = io.BytesIO()
  Image.fromarray(page).save(buf, format="PNG")
  smoke_config.data.grayscale = False
  out = pipeline.Preprocess(smoke_config.data).map(
      {"image": buf.getvalue(), "label": 2, "source_path": "x.png"})
  assert out["image"].shape == (48, 80, 3) and out["label"] == 2
  rows_dark = (out["image"].mean(axis=(1, 2)) < 128).sum()
  assert rows_dark == 20  # 80 px wide -> 20 rows of page, the rest white paper.
  smoke_config.data.grayscale = True
  gray = pipeline.Preprocess(smoke_config.data).map(
      {"image": buf.getvalue(), "label": 0, "source_path": "x.png"})
  assert gray["image"].shape == (48, 80, 1)


def test_undecodable_image_names_its_source(smoke_config):
  with pytest.raises(ValueError, match="broken.jpg"):
    pipeline.Preprocess(smoke_config.data).map(
        {"image": b"not an image", "label": 0, "source_path": "pages/broken.jpg"})


def test_normalize_maps_uint8_to_value_range():
  x = np.array([0, 255, 51], np.uint8)
  np.testing.assert_allclose(pipeline.normalize(x, (-1.0, 1.0)), [-1.0, 1.0, -0.6], atol=1e-6)
  np.testing.assert_allclose(pipeline.normalize(x, (0.0, 1.0)), [0.0, 1.0, 0.2], atol=1e-6)


def test_shuffled_batches_epochs_and_process_slices():
  one = pipeline.ShuffledBatches(num_examples=10, local_batch_size=4, seed=5)
  assert one.per_epoch == 2  # 10 // 4: the partial batch of each epoch is dropped.
  epoch0 = np.concatenate([one[0], one[1]])
  assert len(set(epoch0.tolist())) == 8 and set(epoch0.tolist()) <= set(range(10))
  assert not np.array_equal(np.concatenate([one[2], one[3]]), epoch0)  # Reshuffled.
  np.testing.assert_array_equal(pipeline.ShuffledBatches(10, 4, seed=5)[3], one[3])  # Seeded.
  # Two processes with half the local batch each see exactly the one-process global batch.
  halves = [pipeline.ShuffledBatches(10, 2, seed=5, process_index=p, process_count=2)
            for p in range(2)]
  for k in range(5):
    np.testing.assert_array_equal(np.concatenate([halves[0][k], halves[1][k]]), one[k])
  with pytest.raises(ValueError, match="fewer than one global batch"):
    pipeline.ShuffledBatches(3, 4, seed=0)


def test_lead_crops_train_end_to_end_and_refuse_maps(smoke_config, tmp_path):
  """config.data.crop='leads': the decoded cache holds (h, w, 16) lead stacks under its own key, a
  run trains and reports on them, and maps (drawn over whole panels) are refused in one line."""
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  panel_key = decoded.cache_key(smoke_config.data)
  smoke_config.data.crop = "leads"
  smoke_config.data.image_size = (16, 24)
  assert decoded.cache_key(smoke_config.data) != panel_key
  loaded = _decoded(smoke_config, ("fold0",))
  assert loaded.image_shape == (16, 24, 16)
  with pytest.raises(validate.ConfigError, match="saliency.num_pages.*crop='leads'"):
    validate.check(smoke_config)
  smoke_config.saliency.num_pages = 0
  smoke_config.train.num_epochs = 1
  report = train.train_and_evaluate(smoke_config, str(tmp_path / "leads"))
  assert report["num_examples"] == 4
  smoke_config.data.crop = "rows"
  with pytest.raises(validate.ConfigError, match="data.crop"):
    validate.check(smoke_config)
