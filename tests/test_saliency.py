"""Saliency: where attributions land, IG completeness, determinism, per-lead sums, the command."""

import functools
import io
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs import cnn_small
from ecgjax import saliency
from ecgjax.data import layout
from ecgjax.data import pipeline
from ecgjax.data import transforms
from ecgjax.models.cnn import CustomCNN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from sample_data import SAMPLE_DIR
SAMPLE = str(SAMPLE_DIR)
MI_PAGE = os.path.join(SAMPLE, "ECG Images of Myocardial Infarction Patients (240x12=2880)",
                       "MI(1).jpg")
H, W = 24, 40


# ---------------------------------------------------------------------------------------------
# Models: one hand-built with a known dependence, one trained to find a dark square.
# ---------------------------------------------------------------------------------------------


class TwoRegions(nn.Module):
  """Logit 0 reads only rows/cols 0..7, logit 1 only the last 8 rows and columns (3x3 conv first)."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(2, (3, 3), padding="SAME", name="conv")(x)
    a = jnp.tanh(x[:, :8, :8, 0]).mean((1, 2))
    b = jnp.tanh(x[:, -8:, -8:, 1]).mean((1, 2))
    return jnp.stack([a, b], axis=-1)


# The dark square of a positive page lies inside these rows and columns.
SQUARE_REGION = (2, 12, 2, 20)


def square_pages(key, n):
  """White pages with noise; label 1 pages carry a 5x5 ink square somewhere in SQUARE_REGION."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  labels = jax.random.bernoulli(k1, 0.5, (n,)).astype(jnp.int32)
  rows, cols = jnp.arange(H)[None, :, None], jnp.arange(W)[None, None, :]
  r = jax.random.randint(k2, (n, 1, 1), SQUARE_REGION[0], SQUARE_REGION[1] - 5)
  c = jax.random.randint(k3, (n, 1, 1), SQUARE_REGION[2], SQUARE_REGION[3] - 5)
  square = ((rows >= r) & (rows < r + 5) & (cols >= c) & (cols < c + 5)
            & (labels[:, None, None] == 1))
  image = jnp.where(square, -1.0, 1.0) + 0.1 * jax.random.normal(k4, (n, H, W))
  return jnp.repeat(image[..., None], 3, axis=-1), labels


@pytest.fixture(scope="module")
def square_model():
  """A tiny CustomCNN trained (200 Adam steps, a few seconds) to tell pages with a square."""
  model = CustomCNN(num_classes=2, filters=(4, 8), dense_units=8, dropout=0.0)
  variables = model.init(jax.random.key(0), jnp.zeros((1, H, W, 3)))
  stats = variables["batch_stats"]
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, key):
    images, labels = square_pages(key, 32)

    def loss_fn(p):
      logits = model.apply({"params": p, "batch_stats": stats}, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = variables["params"], tx.init(variables["params"])
  for i in range(200):
    params, opt_state = step(params, opt_state, jax.random.key(i + 1))
  logit_fn = functools.partial(model.apply, {"params": params, "batch_stats": stats})
  images, labels = square_pages(jax.random.key(12345), 16)
  assert (np.asarray(logit_fn(images)).argmax(-1) == np.asarray(labels)).mean() >= 0.9
  positives = images[np.asarray(labels) == 1]
  return logit_fn, positives


@pytest.fixture(scope="module")
def random_cnn():
  model = CustomCNN(num_classes=4, filters=(4, 8), dense_units=8)
  images = jax.random.uniform(jax.random.key(1), (3, H, W, 3), minval=-1.0, maxval=1.0)
  variables = model.init(jax.random.key(0), images)
  return functools.partial(model.apply, variables), images


# ---------------------------------------------------------------------------------------------
# Attribution methods.
# ---------------------------------------------------------------------------------------------


def test_shapes_and_predicted_class_by_default(random_cnn):
  logit_fn, images = random_cnn
  predicted = jnp.argmax(logit_fn(images), -1)
  for method in saliency.METHODS:
    out = saliency.attribute(method, logit_fn, images, key=jax.random.key(0), num_samples=4,
                             steps=8)
    channels = 1 if method == "grad_cam" else 3
    assert out.shape == (3, H, W, channels) and out.dtype == jnp.float32, method
    assert np.isfinite(np.asarray(out)).all(), method
    explicit = saliency.attribute(method, logit_fn, images, predicted, key=jax.random.key(0),
                                  num_samples=4, steps=8)
    np.testing.assert_allclose(out, explicit, rtol=1e-5, atol=1e-7, err_msg=method)
  other = (predicted + 1) % 4
  assert not np.allclose(saliency.vanilla_gradient(logit_fn, images, other),
                         saliency.vanilla_gradient(logit_fn, images))


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated_gradients"])
def test_attribution_stays_in_the_pixels_the_target_logit_reads(method):
  # Page 0 explains logit 0 (top-left 8x8, 10x10 with the 3x3 conv), page 1 logit 1 (bottom-right).
  model = TwoRegions()
  images = jax.random.uniform(jax.random.key(3), (2, H, W, 3), minval=-1.0, maxval=1.0)
  logit_fn = functools.partial(model.apply, model.init(jax.random.key(0), images))
  out = np.abs(np.asarray(saliency.attribute(method, logit_fn, images, jnp.array([0, 1]),
                                             key=jax.random.key(0), num_samples=6, steps=8,
                                             chunk_size=5)))
  inside = np.zeros((2, H, W, 3), bool)
  inside[0, :9, :9] = True
  inside[1, -9:, -9:] = True
  assert (out[~inside] == 0).all()
  assert out[0][inside[0]].sum() > 0 and out[1][inside[1]].sum() > 0


@pytest.mark.parametrize("method", saliency.METHODS)
def test_trained_model_attribution_mass_lands_on_the_square(square_model, method):
  logit_fn, positives = square_model
  out = saliency.attribute(method, logit_fn, positives, key=jax.random.key(0), baseline=1.0)
  heat = saliency.heat_map(out)
  r0, r1, c0, c1 = SQUARE_REGION
  inside = heat[:, r0:r1, c0:c1].sum((1, 2)) / heat.sum((1, 2))
  # The region is 19% of the page; the square itself 2.6%.
  assert (inside > 0.5).all(), inside


def test_integrated_gradients_completeness_within_one_percent(square_model):
  logit_fn, positives = square_model
  targets = jnp.ones(len(positives), jnp.int32)
  ig = saliency.integrated_gradients(logit_fn, positives, targets, baseline=1.0, steps=64)
  total, difference = map(np.asarray, saliency.completeness(logit_fn, positives, ig, targets, 1.0))
  assert (np.abs(difference) > 1.0).all()  # A real difference to be complete about.
  np.testing.assert_allclose(total, difference, rtol=0.01)


def test_smoothgrad_is_deterministic_given_the_key_and_independent_of_chunking(random_cnn):
  logit_fn, images = random_cnn
  run = functools.partial(saliency.smoothgrad, logit_fn, images, num_samples=10)
  a = run(key=jax.random.key(7), chunk_size=64)
  np.testing.assert_array_equal(a, run(key=jax.random.key(7), chunk_size=64))
  np.testing.assert_allclose(a, run(key=jax.random.key(7), chunk_size=7), rtol=1e-4, atol=1e-8)
  assert not np.allclose(a, run(key=jax.random.key(8), chunk_size=64))
  # With no noise every sample is the clean gradient.
  np.testing.assert_allclose(
      saliency.smoothgrad(logit_fn, images, key=jax.random.key(7), num_samples=3,
                          noise_scale=0.0),
      saliency.vanilla_gradient(logit_fn, images), rtol=1e-5, atol=1e-8)


def test_grad_cam_layer_choice_and_errors(random_cnn):
  logit_fn, images = random_cnn
  # The feature maps the head pools: after the last convolution's BatchNorm.
  assert saliency.last_feature_layer(logit_fn, images) == "stage1_bn0"
  np.testing.assert_array_equal(saliency.grad_cam(logit_fn, images),
                                saliency.grad_cam(logit_fn, images, layer="stage1_bn0"))
  assert not np.allclose(saliency.grad_cam(logit_fn, images),
                         saliency.grad_cam(logit_fn, images, layer="stage0_bn0"))
  with pytest.raises(ValueError, match="stage0_conv0"):  # The message lists the usable layers.
    saliency.grad_cam(logit_fn, images, layer="stage9_conv0")
  with pytest.raises(ValueError, match="not \\(B, h, w, c\\)"):
    saliency.grad_cam(logit_fn, images, layer="hidden")
  with pytest.raises(ValueError, match="Unknown saliency method"):
    saliency.attribute("occlusion", logit_fn, images)
  with pytest.raises(ValueError, match="pipeline.normalize"):
    saliency.vanilla_gradient(logit_fn, jnp.zeros((1, H, W, 3), jnp.uint8))


# ---------------------------------------------------------------------------------------------
# Leads.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_hw,target_hw,mode", [
    ((1224, 2102), (48, 80), "pad"), ((595, 1024), (256, 448), "pad"), ((300, 100), (64, 64), "pad"),
    ((37, 91), (20, 30), "pad"), ((595, 1024), (48, 80), "stretch")])
def test_content_box_matches_the_resize_op(source_hw, target_hw, mode):
  ink = np.zeros(source_hw + (3,), np.uint8)
  resized = transforms.parse(f"resize({target_hw[0]}, {target_hw[1]}, mode={mode!r})")[0](ink, None)
  rows, cols = np.nonzero(resized[..., 0] < 128)
  top, left, height, width = saliency.content_box(source_hw, target_hw, mode)
  assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (
      top, left, top + height, left + width)


def test_per_lead_finds_the_lead_holding_the_mass():
  boxes = layout.lead_boxes()
  assert set(boxes) == set(layout.LEADS) | {layout.RHYTHM}
  box = saliency.content_box((1224, 2102), (256, 448))
  pixel = saliency.lead_pixel_boxes(box, boxes)
  attributions = np.zeros((256, 448, 3))
  r0, r1, c0, c1 = pixel["V3"]
  attributions[r0:r1, c0:c1, 1] = -2.0
  r0, r1, c0, c1 = pixel["rhythm"]
  attributions[r0, c0, 0] = 1.0  # A little elsewhere.
  leads = saliency.per_lead(attributions, box, boxes)
  assert leads["ranking"][0] == "V3"
  assert leads["signed"]["V3"] == pytest.approx(-2.0 * (pixel["V3"][1] - pixel["V3"][0])
                                                * (pixel["V3"][3] - pixel["V3"][2]))
  assert leads["signed"]["rhythm"] == pytest.approx(1.0)
  assert sum(leads["share"].values()) + leads["other"] == pytest.approx(1.0)
  assert leads["other"] == pytest.approx(0.0, abs=1e-12)
  assert leads["density"]["V3"] > 10 and leads["density"]["I"] == 0
  # Lead boxes tile the traces without sharing a pixel.
  covered = np.zeros((256, 448), int)
  for r0, r1, c0, c1 in pixel.values():
    covered[r0:r1, c0:c1] += 1
  assert covered.max() == 1 and covered.sum() > 0.8 * box[2] * box[3]


def test_page_from_example_is_the_pipelines_preprocessing():
  config = cnn_small.get_config("smoke")
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (120, 206, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, format="JPEG")
  example = {"image": buffer.getvalue(), "label": 2, "source_path": b"x.jpg"}
  page = saliency.page_from_example(example, config.data, "x")
  np.testing.assert_array_equal(page.image, pipeline.Preprocess(config.data).map(example)["image"])
  assert page.label == 2 and page.box == saliency.content_box((120, 206), config.data.image_size)


# ---------------------------------------------------------------------------------------------
# Outputs: the command and the training job's hook.
# ---------------------------------------------------------------------------------------------


def _check_outputs(json_path, method, num_pages):
  with open(json_path) as f:
    written = json.load(f)
  assert written["method"] == method and len(written["pages"]) == num_pages
  for page in written["pages"]:
    assert set(page["lead_share"]) == set(layout.LEADS) | {layout.RHYTHM}
    assert len(page["top_leads"]) == 3 and len(page["top_leads_per_ink"]) == 3
    assert np.median([page["lead_ink_relative"][k] for k in layout.LEADS]) == pytest.approx(1.0)
    assert sum(page["probabilities"].values()) == pytest.approx(1.0)
    for key in ("overlay", "lead_chart"):
      with Image.open(page[key]) as image:
        assert image.size[0] > 300
  return written


def test_command_writes_overlays_charts_and_json(smoke_run_dir, tmp_path):
  out = str(tmp_path / "maps")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  # The second page is the first one's crop, given with --images and as a plain argument.
  panel = str(tmp_path / "panel.png")
  with Image.open(MI_PAGE) as page:
    page.crop((71, 287, 2173, 1511)).save(panel)
  result = subprocess.run(
      [sys.executable, "-m", "ecgjax.saliency", f"--workdir={smoke_run_dir}", f"--out={out}",
       "--method=integrated_gradients", "--steps=8", "--contrast_steps=8", f"--images={MI_PAGE}",
       panel],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  written = _check_outputs(os.path.join(out, "saliency_integrated_gradients.json"),
                           "integrated_gradients", 2)
  first, second = written["pages"]
  assert first["true_class"] == "mi"  # From the release's folder name.
  assert second["true_class"] is None
  assert "completeness" in first
  # Each lead's contribution to the predicted class over the runner-up: the leads' and the rest's
  # add up to the Integrated Gradients total, which is near the margin's change from a blank page.
  contrast = first["contrast"]
  assert contrast["versus"] != first["predicted_class"] and contrast["margin"] >= 0
  assert (sum(contrast["lead_contribution"].values()) + contrast["other_contribution"]
          == pytest.approx(contrast["attribution_sum"], abs=1e-4))
  assert contrast["attribution_sum"] == pytest.approx(contrast["margin_over_blank_page"],
                                                      abs=0.05 + 0.1 * abs(contrast["margin"]))
  # Panel found on the page and the hand crop give nearly the same model input.
  assert abs(first["probabilities"]["mi"] - second["probabilities"]["mi"]) < 0.05


def test_command_names_and_skips_bad_files_and_explains_the_good_pages(smoke_run_dir, tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("this is not a JPEG")
  out = str(tmp_path / "maps")
  result = subprocess.run(
      [sys.executable, "-m", "ecgjax.saliency", f"--workdir={smoke_run_dir}", f"--out={out}",
       "--method=gradient", "--images=no_such_page.jpg", f"--images={not_an_image}",
       "--contrast_steps=0", f"--images={MI_PAGE}"], env=env, cwd=REPO, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 1
  assert "no_such_page.jpg" in result.stderr and "notes.jpg" in result.stderr
  page, = _check_outputs(os.path.join(out, "saliency_gradient.json"), "gradient", 1)["pages"]
  assert "contrast" not in page  # --contrast_steps=0.


def test_write_test_maps_explains_test_pages(smoke_run_dir, tfds_data_dir):
  config = cnn_small.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  config.saliency.method = "grad_cam"
  builder = pipeline.dataset_builder(config.dataset)
  source = pipeline.Source(builder, pipeline.fold_splits(config.data).test)
  written = saliency.write_test_maps(smoke_run_dir, source, config)
  assert written["json"].startswith(os.path.join(smoke_run_dir, "saliency"))
  pages = _check_outputs(written["json"], "grad_cam", config.saliency.num_pages)["pages"]
  labels = [int(source[i]["label"]) for i in range(config.saliency.num_pages)]
  assert [p["true_class"] for p in pages] == [saliency.CLASS_NAMES[l] for l in labels]
