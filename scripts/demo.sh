#!/usr/bin/env bash
# The main job on the default recipe: builds the synthetic data set, digitizes its pages, trains the
# 1-D model on their leads (configs/default.py), evaluates the test fold and writes saliency maps
# drawn on the digitized traces. Extra arguments go to ecgjax.main, e.g.
#   bash scripts/demo.sh --config.train.num_epochs=5
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
WORKDIR="${WORKDIR:-runs/default}"
export TFDS_DATA_DIR="${TFDS_DATA_DIR:-$ROOT/data/tensorflow_datasets}"
python -m ecgjax.main --config=configs/default.py --workdir="$WORKDIR" \
  --config.dataset.data_dir="$TFDS_DATA_DIR" "$@"
python - "$WORKDIR" <<'PY'
import json, os, sys
workdir = os.path.abspath(sys.argv[1])
report = json.load(open(os.path.join(workdir, "eval", "report.json")))
print()
print(f"Test fold {report['split']} of {report['dataset']} ({report['num_examples']} pages), "
      f"checkpoint {report['checkpoint']} at step {report['checkpoint_step']}:")
print(f"  accuracy {report['accuracy']:.3f}  balanced accuracy {report['balanced_accuracy']:.3f}  "
      f"macro-F1 {report['macro_f1']:.3f}")
print("Outputs:")
print(f"  report            {workdir}/eval/report.json")
print(f"  confusion matrix  {workdir}/eval/confusion_matrix.png")
print(f"  per page          {workdir}/eval/predictions.csv")
print(f"  saliency maps     {workdir}/saliency/")
print(f"  checkpoints       {workdir}/checkpoints/")
print(f"  TensorBoard       tensorboard --logdir {workdir}")
print(f"  config            {workdir}/config.json")
PY
