"""Every registered method through the pipeline, on every offline default dataset (smoke size):
the comparison config's method set, an ensemble of two seeds on the tabular default."""
import json
import os

import numpy as np
import pytest

from jax_unlearn import config_io, configs, pipeline, unlearn

# What every method's run needs, no more: one epoch of the original, errors and distances only.
CHEAP = {"metrics.which": "['errors', 'wasserstein']", "plots": "False", "tensorboard": "False",
         "train.epochs": "1"}


# sisa's two stages train a new K x S-member program each, 20 s of compilation apiece for the
# TFT: it runs here on the three other model families (its shards train on the ensemble path,
# the same for every model). Nor do the methods that only train on the retain rows with the
# task's loss (plus noise or a penalty on the weights) run on the TFT: the retrained stage runs
# that path on it, and their own code on the three other families. Nor do the weight edits from
# gradient statistics (the TFT's gradients of the task loss are the retrained stage's; the edits
# map over any parameter tree): 3-7 s of compilation each.
LEFT_OUT = {"taylor_tft": ("sisa", "finetune", "gaussian", "l1_sparse", "fisher", "lfssd", "ssd",
                           "msg", "salun")}


def _load(name, seeds):
  c = config_io.load_config(name)
  c.methods = config_io.load_config("compare_all").methods
  for label in LEFT_OUT.get(name, ()):
    del c.methods[label]
  if "finetune" in c.methods:  # a variant runs too
    c.methods["finetune_fast"] = configs.method_variant("finetune", lr=3e-3)
  c.smoke, c.seeds = True, seeds
  return c


# The ensemble of two seeds runs on the MLP: every method's members on a convolutional model are
# checked against single runs in test_unlearn.py and test_methods_*.py.
@pytest.mark.slow
@pytest.mark.parametrize("name, seeds", [("rotdigits_allcnn", 1), ("textpairs_lstm", 1),
                                         ("taylor_tft", 1), ("diabetes_mlp", 2)])
def test_every_method_runs_in_the_pipeline(name, seeds, tmp_path):
  # As overrides, so they win over the smoke sizes.
  results = pipeline.run_experiment(_load(name, seeds), str(tmp_path), quiet=True,
                                    overrides=list(CHEAP.items()))
  methods = [m for m in unlearn.method_names()
             if m != "retrained" and m not in LEFT_OUT.get(name, ())]
  assert set(methods) <= set(results["models"])
  assert ("finetune_fast" in results["models"]) == ("finetune" in methods)
  for m in ["original", "retrained", *methods]:
    value = results["models"][m]["retain_test_error"]
    value = value["mean"] if seeds > 1 else value
    assert np.isfinite(value), (m, value)
  assert results["cost"]["retrained"]["vs_retrained"] == 1.0
  assert all(r["seconds"] >= 0 for r in results["cost"].values())
  assert "## Cost" in open(os.path.join(tmp_path, "results.md")).read()
  on_disk = json.load(open(os.path.join(tmp_path, "results.json")))
  if "finetune" in methods:
    assert on_disk["config"]["methods"]["finetune_fast"]["method"] == "finetune"
  if name == "textpairs_lstm":  # an offline run says which word vectors it used
    assert "GloVe 6B 50-d" in results["dataset"]["label"]
    assert "GloVe 6B 50-d" in open(os.path.join(tmp_path, "results.md")).read()
