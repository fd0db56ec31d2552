"""The published numbers: their structure, their lookup by a profile's experiment name."""
import math

import pytest

from jax_unlearn import config_io, metrics, published

MODELS = {"original", "retrained", "finetune", "gaussian", "blindspot"}


@pytest.mark.parametrize("name", sorted(published.PUBLISHED))
def test_every_entry_has_the_results_structure(name):
  entry = published.PUBLISHED[name]
  assert entry["error"] in ("mae", "mse") and entry["source"]
  assert set(entry["rows"]) == MODELS
  for model, row in entry["rows"].items():
    assert {"retain_test_error", "forget_test_error"} <= set(row) <= set(published.ERROR_KEYS)
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in row.values())
    # The table's values are the notebook's, rounded to two decimals.
    for key, value in row.items():
      printed = entry["notebook"][model].get(key, 0.0)
      assert round(printed, 2) == value, (name, model, key)
  # The keys are our results' keys, the models our model names.
  ours = {k for m in ("errors", "wasserstein") for k in metrics.get(m).keys}
  assert set(published.ERROR_KEYS) <= ours


def test_the_table_by_hand():
  agedb = published.rows_for("agedb_allcnn")["rows"]
  assert (agedb["original"]["retain_test_error"], agedb["original"]["forget_test_error"]) == (
      9.33, 12.77)
  assert [agedb[m]["wasserstein_to_retrained"] for m in
          ("original", "retrained", "finetune", "gaussian", "blindspot")] == [
              2.99, 0.0, 1.62, 2.33, 1.15]
  stsb = published.rows_for("stsb_lstm")
  assert stsb["error"] == "mse"
  assert stsb["rows"]["blindspot"] == {"retain_test_error": 0.98, "forget_test_error": 6.39}
  assert "wasserstein_to_retrained" not in stsb["rows"]["original"]


@pytest.mark.parametrize("config, error", [("agedb_allcnn", "mae"), ("stsb_lstm", "mse")])
def test_lookup_by_the_profiles_experiment_name(config, error):
  c = config_io.load_config(config)
  entry = published.rows_for(c.experiment)
  assert entry is not None and entry["error"] == error


def test_other_experiments_have_none_and_lookups_are_copies():
  assert published.rows_for(config_io.load_config("demo").experiment) is None
  assert published.rows_for("textpairs_lstm") is None
  entry = published.rows_for("stsb_lstm")
  entry["rows"]["original"]["retain_test_error"] = -1.0
  assert published.rows_for("stsb_lstm")["rows"]["original"]["retain_test_error"] == 2.84
