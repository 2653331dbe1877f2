"""The ECG Images release (Khan & Hussain, Mendeley Data) as the TFDS builder `ecg_images`.

The release repeats itself: of its 928 files about 491 are distinct pages, and a random split puts
copies of a page in both train and test. This builder turns it into an honest benchmark: it merges
copies of a page (byte-identical or re-encoded) into one example, crops each page to its grid panel
(found from the pixels, see `panel.py`) and deals distinct pages into five stratified folds,
`fold0`..`fold4`. A config picks the test and validation folds; the others train.

Build (no TensorFlow needed to build or read; images are stored as JPEG bytes in array_record):

  tfds build ecgjax/data/ecg_images.py --manual_dir=~/ecg_release --file_format=array_record

or from Python: `EcgImages(config="w1024").download_and_prepare(download_config=
tfds.download.DownloadConfig(manual_dir=...))`. A file that cannot be read stops the build unless
the builder is made with `on_bad_file="skip"` (`tfds.builder("ecg_images", on_bad_file="skip")`);
either way the count is logged and kept in `info.metadata`, with the duplicates removed per class.

Not for: the grain input pipeline or augmentation (see `transforms.py`), nor synthetic pages.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from scipy.sparse import csgraph, csr_matrix

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import features as features_lib
from ecgjax.data import panel

_HOMEPAGE = "https://data.mendeley.com/datasets/gwbz3fsgp8/2"
_CITATION = """\
@misc{khan2021ecgimages,
  author = {Khan, Ali Haider and Hussain, Muzammil},
  title = {{ECG Images dataset of Cardiac Patients}},
  year = {2021},
  publisher = {Mendeley Data},
  version = {V2},
  doi = {10.17632/gwbz3fsgp8.2},
}"""

# Folder names that mean each class, compared after `_normalise_folder` (lower case, words joined
# by "_", a trailing "(233x12=2796)"-style count dropped). The first of each is the release's own.
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "abnormal_heartbeat": (
        "ecg_images_of_patient_that_have_abnormal_heartbeat", "abnormal_heartbeat_ecg_images",
        "ecg_images_of_patients_that_have_abnormal_heartbeat", "abnormal_heartbeat",
        "abnormal_heartbeat_patients", "abnormal_heart_beat", "hb"),
    "history_of_mi": (
        "ecg_images_of_patient_that_have_history_of_mi", "post_mi_history_ecg_images",
        "ecg_images_of_patients_that_have_history_of_mi", "history_of_mi", "history_of_mi_patients",
        "history_of_mi_ecg_images", "post_mi_history", "pmi"),
    "mi": (
        "ecg_images_of_myocardial_infarction_patients", "myocardial_infarction_ecg_images",
        "myocardial_infarction", "myocardial_infarction_patients", "mi", "mi_ecg_images"),
    "normal": (
        "normal_person_ecg_images", "normal_ecg_images", "normal_persons_ecg_images", "normal",
        "normal_person", "normal_patients"),
}
_CLASS_OF_FOLDER = {name: label for label, names in FOLDER_NAMES.items() for name in names}
assert set(FOLDER_NAMES) == set(CLASS_NAMES)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Files an OS or archiver adds; listed in a warning, never read.
_SYSTEM_FILES = re.compile(r"(^|/)(__MACOSX/|\._)|(^|/)(\.DS_Store|Thumbs\.db|desktop\.ini)$",
                           re.IGNORECASE)

# Near-duplicate pages: grey thumbnails of this size, standardised, compared by correlation
# distance (1 - r). On the sample, re-encodings (JPEG quality 30-90, resizing to 1024 px, PNG)
# stay below 0.004 while distinct pages are at least 0.044 apart; the build logs the closest
# distinct pair so the margin on a new copy of the release can be checked.
THUMBNAIL_SIZE = (128, 96)
DUPLICATE_DISTANCE = 0.01

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download "ECG Images dataset of Cardiac Patients" (doi:10.17632/gwbz3fsgp8.2) from
https://data.mendeley.com/datasets/gwbz3fsgp8/2 and place it in the manual_dir, either as the zip
file as downloaded or extracted, so that the four class folders are somewhere below manual_dir:

  <manual_dir>/.../ECG Images of Myocardial Infarction Patients (240x12=2880)/MI(1).jpg
  <manual_dir>/.../ECG Images of Patient that have History of MI (172x12=2064)/PMI(1).jpg
  <manual_dir>/.../ECG Images of Patient that have abnormal heartbeat (233x12=2796)/HB(1).jpg
  <manual_dir>/.../Normal Person ECG Images (284x12=3408)/Normal(1).jpg

Other copies' folder names (normal_ecg_images, abnormal_heartbeat_ecg_images,
myocardial_infarction_ecg_images, post_mi_history_ecg_images, ...) are recognised too. The default
manual_dir is ~/tensorflow_datasets/downloads/manual/; pass another with --manual_dir.
"""


def _normalise_folder(name: str) -> str:
  name = re.sub(r"\(\s*\d+\s*x\s*\d+\s*=\s*\d+\s*\)", " ", name.lower())
  return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def is_image_file(path: str) -> bool:
  """Whether a file of `list_files` is a page to read: an image, not one an OS or archiver added."""
  return not _SYSTEM_FILES.search(path) and path.lower().endswith(IMAGE_SUFFIXES)


def class_of_path(path: str) -> str | None:
  """The class of the deepest folder in `path` whose name is a class folder's, or None."""
  for folder in reversed(path.split("/")[:-1]):
    label = _CLASS_OF_FOLDER.get(_normalise_folder(folder.removesuffix(".zip")))
    if label is not None:
      return label
  return None


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """One file of the release: `path` relative to manual_dir (a zip's members as "a.zip/x/y.jpg")."""
  path: str
  root: epath.Path
  archive: str | None = None  # the zip under root holding it, relative to root
  member: str | None = None

  def read(self) -> bytes:
    if self.archive is None:
      return (self.root / self.path).read_bytes()
    with (self.root / self.archive).open("rb") as f, zipfile.ZipFile(f) as zf:
      return zf.read(self.member)


def _walk(folder: epath.Path) -> Iterator[epath.Path]:
  # Not rglob: epath refuses "**" on paths that may be remote.
  for path in sorted(folder.iterdir()):
    if path.is_dir():
      yield from _walk(path)
    else:
      yield path


def list_files(manual_dir: epath.Path, unreadable: dict[str, str] | None = None
               ) -> list[SourceFile]:
  """Every file below `manual_dir`, looking inside zip files, sorted by path.

  A zip that cannot be opened (a partial download) raises ValueError naming it; with an
  `unreadable` dict it is recorded there (path -> why) and left out instead.
  """
  files = []
  for path in _walk(manual_dir):
    rel = path.relative_to(manual_dir).as_posix()
    if path.suffix.lower() == ".zip":
      try:
        with path.open("rb") as f, zipfile.ZipFile(f) as zf:
          files.extend(SourceFile(f"{rel}/{info.filename}", manual_dir, rel, info.filename)
                       for info in zf.infolist() if not info.is_dir())
      except (OSError, zipfile.BadZipFile) as e:
        if unreadable is None:
          raise ValueError(f"{path}: not a readable zip archive ({type(e).__name__}: {e}). "
                           "Download it again, or build with on_bad_file='skip'.") from e
        unreadable[rel] = f"{type(e).__name__}: {e}"
    else:
      files.append(SourceFile(rel, manual_dir))
  return sorted(files, key=lambda s: s.path)


@dataclasses.dataclass
class Page:
  """A readable page of the release and what the scan learnt about it."""
  source: SourceFile
  label: str
  content_id: str  # hash of the file's bytes
  signature: np.ndarray  # standardised grey thumbnail, unit norm
  box: panel.Box


@dataclasses.dataclass
class Scan:
  """What `scan_release` found: one page per distinct image, and the report of the build."""
  pages: list[Page]  # the representative of each group of copies, sorted by content_id
  copies: dict[str, list[str]]  # content_id -> paths of the removed copies
  files_per_class: dict[str, int]
  duplicates_per_class: dict[str, int]
  bad_files: dict[str, str]  # path -> why it could not be used
  ignored_files: list[str]  # system files and non-images
  closest_distinct: float  # smallest correlation distance between two kept pages


def signature(image: Image.Image) -> np.ndarray:
  """A page's fingerprint for near-duplicate detection: invariant to re-encoding and resizing."""
  thumb = np.asarray(image.convert("L").resize(THUMBNAIL_SIZE, Image.Resampling.BOX),
                     dtype=np.float32).ravel()
  thumb = thumb - thumb.mean()
  norm = np.linalg.norm(thumb)
  return thumb / norm if norm > 0 else thumb


def _read_page(source: SourceFile, label: str) -> Page:
  data = source.read()
  with Image.open(io.BytesIO(data)) as im:
    rgb = im.convert("RGB")  # decodes fully, so a truncated file fails here
  box = panel.find_panel(np.asarray(rgb), source.path)
  return Page(source, label, features_lib.content_id(data), signature(rgb), box)


def scan_release(manual_dir: epath.PathLike, on_bad_file: str = "error") -> Scan:
  """Lists, reads and deduplicates the release below `manual_dir` (folders or zips).

  Copies (same bytes, or correlation distance of thumbnails below DUPLICATE_DISTANCE, grouped
  transitively) become one page: the copy whose bytes hash lowest, so the choice, and with it the
  page's `image_id` and fold, does not depend on file names or on which other copies are present.

  Raises:
    FileNotFoundError: `manual_dir` is missing or holds no image.
    ValueError: an image outside any class folder; one page under two classes; a bad file when
      `on_bad_file="error"`.
  """
  if on_bad_file not in ("error", "skip"):
    raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}.")
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.is_dir():
    raise FileNotFoundError(f"manual_dir {manual_dir} does not exist.\n"
                            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  ignored, unlabelled, candidates = [], [], []
  bad = {}  # path -> why it cannot be used: zip archives first, then images
  for source in list_files(manual_dir, bad if on_bad_file == "skip" else None):
    if not is_image_file(source.path):
      ignored.append(source.path)
      continue
    label = class_of_path(source.path)
    if label is None:
      unlabelled.append(source.path)
    else:
      candidates.append((source, label))
  if ignored:
    logging.warning("ecg_images: ignoring %d files that are not images of a class folder: %s",
                    len(ignored), ", ".join(ignored))
  if unlabelled:
    raise ValueError(
        f"{len(unlabelled)} images under {manual_dir} are in no recognised class folder, so their "
        f"class is unknown: {', '.join(unlabelled[:10])}{' ...' if len(unlabelled) > 10 else ''}."
        f" Recognised folder names (case and punctuation ignored): {FOLDER_NAMES}.")
  if not candidates:
    raise FileNotFoundError(f"No images found under manual_dir {manual_dir}.\n"
                            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")

  pages = []
  for source, label in candidates:
    try:
      pages.append(_read_page(source, label))
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as e:  # PIL raises all three
      bad[source.path] = f"{type(e).__name__}: {e}"
  if bad:
    listing = "\n".join(f"  {path}: {why}" for path, why in bad.items())
    if on_bad_file == "error":
      raise ValueError(f"{len(bad)} of {len(candidates)} images under {manual_dir} cannot be "
                       f"used:\n{listing}\nReplace them, or build with on_bad_file='skip'.")
    logging.warning("ecg_images: skipping %d of %d files that cannot be used:\n%s", len(bad),
                    len(candidates), listing)

  groups = _group_copies(pages)
  kept, copies = [], {}
  duplicates = dict.fromkeys(CLASS_NAMES, 0)
  files = dict.fromkeys(CLASS_NAMES, 0)
  for page in pages:
    files[page.label] += 1
  for members in groups:
    labels = sorted({m.label for m in members})
    if len(labels) > 1:
      first = {m.label: m.source.path for m in reversed(members)}
      raise ValueError(
          "One page stands under two classes: " +
          " and ".join(f"{first[label]} ({label})" for label in labels) +
          ". Remove the wrong copy from manual_dir.")
    members = sorted(members, key=lambda m: (m.content_id, m.source.path))
    kept.append(members[0])
    copies[members[0].content_id] = [m.source.path for m in members[1:]]
    duplicates[members[0].label] += len(members) - 1
  kept.sort(key=lambda m: m.content_id)
  closest = _closest_distinct(kept)
  for label in CLASS_NAMES:
    logging.info("ecg_images: %s: %d files, %d duplicates removed, %d distinct pages.", label,
                 files[label], duplicates[label], files[label] - duplicates[label])
  logging.info("ecg_images: closest distinct pages are %.4f apart (duplicates below %.4f).",
               closest, DUPLICATE_DISTANCE)
  return Scan(kept, copies, files, duplicates, bad, ignored, closest)


def _group_copies(pages: Sequence[Page]) -> list[list[Page]]:
  """Transitive groups of pages with equal bytes or near-equal thumbnails."""
  if not pages:
    return []
  sig = np.stack([p.signature for p in pages])
  near = (1.0 - sig @ sig.T) < DUPLICATE_DISTANCE
  ids = np.array([p.content_id for p in pages])
  near |= ids[:, None] == ids[None, :]
  _, component = csgraph.connected_components(csr_matrix(near), directed=False)
  groups: dict[int, list[Page]] = {}
  for page, c in zip(pages, component):
    groups.setdefault(int(c), []).append(page)
  return list(groups.values())


def _closest_distinct(pages: Sequence[Page]) -> float:
  if len(pages) < 2:
    return float("nan")
  sig = np.stack([p.signature for p in pages])
  distance = 1.0 - sig @ sig.T
  np.fill_diagonal(distance, np.inf)
  return float(distance.min())


class EcgImagesConfig(tfds.core.BuilderConfig):
  """How the panel crop is stored: `width` pixels wide (None keeps the scan's resolution)."""

  def __init__(self, *, width: int | None, jpeg_quality: int = 95, **kwargs):
    super().__init__(**kwargs)
    self.width = width
    self.jpeg_quality = jpeg_quality


class EcgImages(tfds.core.GeneratorBasedBuilder):
  """ECG Images dataset of Cardiac Patients: distinct pages, panel-cropped, in five folds."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Deduplicated pages cropped to the grid panel, in 5 stratified folds."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      EcgImagesConfig(name="w1024", width=1024,
                      description="Grid panel resized to 1024 px wide (about 595 px high)."),
      EcgImagesConfig(name="w640", width=640,
                      description="Grid panel resized to 640 px wide (about 372 px high): enough "
                      "for models up to 320x544, a third of w1024's bytes."),
      EcgImagesConfig(name="full", width=None,
                      description="Grid panel at the scan's resolution (about 2100 x 1220 px)."),
  ]
  DEFAULT_CONFIG_NAME = "w1024"

  def __init__(self, *, on_bad_file: str = "error", **kwargs):
    """`on_bad_file`: "error" stops the build at unreadable files, "skip" leaves them out."""
    if on_bad_file not in ("error", "skip"):
      raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}.")
    self._on_bad_file = on_bad_file
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.features("jpeg"),
        supervised_keys=("image", "label"),
        homepage=_HOMEPAGE,
        citation=_CITATION,
        # The build's report (duplicates per class, bad files), saved beside the data.
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    scan = scan_release(dl_manager.manual_dir, self._on_bad_file)
    self.info.metadata.update({
        "files_per_class": scan.files_per_class,
        "duplicates_removed_per_class": scan.duplicates_per_class,
        "distinct_pages": len(scan.pages),
        "bad_files": scan.bad_files,
        "num_bad_files": len(scan.bad_files),
        "ignored_files": scan.ignored_files,
        "closest_distinct_distance": scan.closest_distinct,
    })
    labels = [CLASS_NAMES.index(p.label) for p in scan.pages]
    folds = features_lib.assign_folds(labels, [p.content_id for p in scan.pages])
    return {
        split: self._generate_examples([p for p, f in zip(scan.pages, folds) if f == k])
        for k, split in enumerate(features_lib.SPLITS)
    }

  def _generate_examples(self, pages: Sequence[Page]) -> Iterator[tuple[str, dict]]:
    for page in pages:
      yield page.content_id, {
          "image": self._encoded_panel(page),
          "label": page.label,
          "image_id": page.content_id,
          "source_path": page.source.path,
      }

  def _encoded_panel(self, page: Page) -> bytes:
    """The page's panel, resized per the config, as JPEG bytes (so no TensorFlow is needed)."""
    box = page.box
    with Image.open(io.BytesIO(page.source.read())) as im:
      crop = im.convert("RGB").crop((box.left, box.top, box.right, box.bottom))
    return encode_panel(crop, self.builder_config.width, self.builder_config.jpeg_quality)


def encode_panel(crop: Image.Image, width: int | None, jpeg_quality: int) -> bytes:
  """A panel crop as a builder config stores it: `width` px wide (LANCZOS), JPEG at 4:4:4."""
  if width is not None and crop.width != width:
    height = max(1, round(crop.height * width / crop.width))
    crop = crop.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
  buffer = io.BytesIO()
  # 4:4:4 chroma keeps the one-pixel pink grid dots their colour.
  crop.save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
  return buffer.getvalue()


def store_panel(panel: np.ndarray, config_name: str | None) -> bytes:
  """A panel crop (uint8 RGB) as the builder config `config_name` (None: the default) stores its
  pages, so a page read from a file (`pipeline.load_page`) reaches the model as a training page
  does: a model trained on `w640` panels is not shown a 1280 px panel min-pooled instead."""
  configs = {c.name: c for c in EcgImages.BUILDER_CONFIGS}
  name = config_name or EcgImages.DEFAULT_CONFIG_NAME
  if name not in configs:
    raise ValueError(f"config.dataset.config={name!r} is no ecg_images config; available: "
                     f"{sorted(configs)}.")
  return encode_panel(Image.fromarray(panel), configs[name].width, configs[name].jpeg_quality)
