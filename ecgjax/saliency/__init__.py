r"""Saliency maps for any classifier given as a logit function, summed per ECG lead.

  python -m ecgjax.saliency --workdir=runs/default --method=smoothgrad --out=runs/default/maps \
      --images 'pages/MI(1).jpg' 'pages/Normal(3).jpg'

The package, one concern a module (none imports a module listed after it):

- `attribution`: gradient, SmoothGrad, Integrated Gradients and Grad-CAM as pure, jitted functions
  of `logit_fn(images) -> (B, num_classes)`, run in chunks of batched forward-backward passes.
- `leads`: the panel's box in the model input, a page's ink, and each lead's share of a map
  (`per_lead`).
- `pages`: `Page`, a model input to explain, made from a data set example or an image file.
- `figures`: the overlay of a map on its page and the per-lead bar chart (matplotlib, lazily).
- `explain`: `explain_pages` (figures and one JSON) and `write_test_maps`, which training calls.
- `signals`: the 1-D signal models' explanations (`explain_signal_pages`): attributions over the
  digitized leads, per-lead shares with the rhythm strip as its own entry, and the digitized traces
  drawn back onto the page coloured by attribution.
- `evaluation`: is a map right? Territory localisation, the randomisation sanity check, deletion
  and insertion curves (`experiments/explain_eval.py` prints their tables).
- `__main__`: the `python -m ecgjax.saliency` command line (`run`) and the text of its --help.

The names used elsewhere are re-exported here, so `from ecgjax import saliency; saliency.per_lead`
works as before the split. Not here: training, the model zoo, or evaluation metrics.
"""

from ecgjax.classes import CLASS_NAMES
from ecgjax.saliency.attribution import (
    METHODS, Contrast, Layer, LogitFn, attribute, completeness, contrast_targets, grad_cam,
    integrated_gradients, last_feature_layer, layers, smoothgrad, vanilla_gradient)
from ecgjax.saliency.explain import explain_pages, write_test_maps
from ecgjax.saliency.figures import plot_leads, plot_overlay
from ecgjax.saliency.leads import content_box, heat_map, ink, lead_pixel_boxes, lead_sums, per_lead
from ecgjax.saliency.pages import Page, page_from_example, page_from_file, prepare_page
from ecgjax.saliency.signals import (
    SIGNAL_METHODS, SignalPage, explain_signal_pages, per_lead_signals, plot_signal_overlay,
    signal_page_from_file, trace_segments)

__all__ = [
    "CLASS_NAMES", "METHODS", "Contrast", "Layer", "LogitFn", "Page", "attribute", "completeness",
    "SIGNAL_METHODS", "SignalPage", "content_box", "contrast_targets", "explain_pages",
    "explain_signal_pages", "grad_cam", "heat_map", "ink", "integrated_gradients",
    "last_feature_layer", "layers", "lead_pixel_boxes", "lead_sums", "page_from_example",
    "page_from_file", "per_lead", "per_lead_signals", "plot_leads", "plot_overlay",
    "plot_signal_overlay", "prepare_page", "signal_page_from_file", "smoothgrad", "trace_segments",
    "vanilla_gradient", "write_test_maps",
]
