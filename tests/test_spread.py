import json
import math

import numpy as np
import pytest

from jax_unlearn.errors import UserError
from jax_unlearn.metrics import (aggregate, compare, format_value, noise_floor, paired_difference,
                                 plot_seeds, summarize, write_comparisons, write_floor,
                                 write_markdown)
from jax_unlearn.metrics.spread import FLOOR

T_975_2 = 4.303  # Student-t 97.5% quantile, 2 degrees of freedom


def test_summarize_matches_hand_computed_numbers():
  s = summarize([2.0, 4, np.float32(6.0)])
  assert s["mean"] == pytest.approx(4.0)
  assert s["std"] == pytest.approx(2.0)  # sqrt(((-2)^2 + 0 + 2^2) / 2)
  half = T_975_2 * 2.0 / math.sqrt(3)
  assert s["ci95"] == pytest.approx([4.0 - half, 4.0 + half], rel=1e-3)
  assert s["values"] == [2.0, 4.0, 6.0]
  assert all(type(v) is float for v in [s["mean"], s["std"], *s["ci95"], *s["values"]])
  json.dumps(s, allow_nan=False)


def test_summarize_leaves_out_undefined_values_and_handles_one_or_none():
  s = summarize([1.0, None, float("nan"), 3.0])
  assert s["values"] == [1.0, None, None, 3.0]
  assert s["mean"] == pytest.approx(2.0)
  assert s["std"] == pytest.approx(math.sqrt(2.0))
  one = summarize([None, 5.0])
  assert (one["mean"], one["std"], one["ci95"]) == (5.0, 0.0, [5.0, 5.0])
  assert summarize([None, float("inf")]) == {"mean": None, "std": None, "ci95": None,
                                             "values": [None, None]}
  with pytest.raises(UserError, match="numbers or booleans"):
    summarize(["mae", "mae"])


def test_summarize_booleans_give_the_fraction_true():
  s = summarize([True, False, None, np.bool_(True)])
  assert s == {"mean": pytest.approx(2 / 3), "std": None, "ci95": None,
               "values": [True, False, None, True]}


def test_aggregate_keeps_order_and_counts_missing_as_none():
  seeds = [{"original": {"e": 1.0, "cap": False, "note": "a"}, "retrained": {"e": 0.0}},
           {"retrained": {"e": 2.0, "extra": 1}, "original": {"e": 3.0, "cap": True,
                                                               "note": "b"}, "new": {"e": 9.0}}]
  agg = aggregate(seeds)
  assert list(agg) == ["original", "retrained", "new"]
  assert list(agg["original"]) == ["e", "cap", "note"]
  assert list(agg["retrained"]) == ["e", "extra"]
  assert agg["original"]["e"]["mean"] == pytest.approx(2.0)
  assert agg["original"]["cap"]["mean"] == 0.5
  assert agg["original"]["note"] == {"values": ["a", "b"]}
  assert agg["retrained"]["extra"]["values"] == [None, 1.0]
  assert agg["new"]["e"]["values"] == [None, 9.0]
  json.dumps(agg, allow_nan=False)
  with pytest.raises(UserError):
    aggregate([])


def test_paired_difference_of_identical_inputs_is_zero():
  d = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
  assert d == {"n": 3, "mean": 0.0, "ci95": [0.0, 0.0], "wilcoxon_p": None,
               "values": [0.0, 0.0, 0.0]}


def test_paired_difference_of_a_consistent_shift_excludes_zero():
  r = np.random.default_rng(0)
  b = r.normal(size=8)
  a = b + 1.0 + 0.1 * r.normal(size=8)
  d = paired_difference(list(a), list(b))
  assert d["n"] == 8 and d["mean"] == pytest.approx(float(np.mean(a - b)))
  assert 0 < d["ci95"][0] < d["mean"] < d["ci95"][1]
  assert d["wilcoxon_p"] == pytest.approx(2 / 2 ** 8)
  assert paired_difference(list(a), list(b)) == d  # deterministic given the seed
  # Three seeds all positive: the smallest p three seeds can give.
  assert paired_difference([1.0, 2.0, 3.5], [0.0, 0.0, 0.0])["wilcoxon_p"] == pytest.approx(0.25)


def test_paired_difference_drops_pairs_with_a_missing_side():
  d = paired_difference([1.0, None, 3.0, 4.0], [0.0, 1.0, None, 2.0])
  assert d["n"] == 2 and d["values"] == [1.0, 2.0]
  assert paired_difference([None], [1.0])["mean"] is None
  with pytest.raises(UserError, match="one value per seed"):
    paired_difference([1.0], [1.0, 2.0])


def _seeds(n=8):
  """`n` seeds where "close" is near the retrained model on every key and "far" is not."""
  r = np.random.default_rng(1)
  out = []
  for _ in range(n):
    ref = float(r.uniform(1, 2))
    floor = float(r.uniform(0.1, 0.2))
    out.append({
        "retrained": {"forget_test_error": ref, "retain_test_error": 1.0,
                      "wasserstein_to_retrained": 0.0},
        "close": {"forget_test_error": ref + float(r.normal(0, 0.01)),
                  "retain_test_error": 1.5 + float(r.normal(0, 0.01)),
                  "wasserstein_to_retrained": floor + float(r.normal(0, 0.01))},
        # Lower raw forget error than "close", but much farther from the retrained model.
        "far": {"forget_test_error": ref - 1.0, "retain_test_error": 1.2 + float(r.normal(0, .01)),
                "wasserstein_to_retrained": floor + 1.0},
        FLOOR: {"wasserstein_to_retrained": floor},
    })
  return out


def test_compare_follows_each_key_direction():
  keys = ("retain_test_error", "forget_test_error", "wasserstein_to_retrained")
  out = compare(_seeds(), ["close", "far", "retrained"], keys)
  assert list(out) == ["close vs far", "close vs retrained", "far vs retrained"]
  pair = out["close vs far"]
  assert pair["retain_test_error"]["better"] == "far"  # ↓: lower wins
  assert pair["retain_test_error"]["mean"] == pytest.approx(0.3, abs=0.02)
  assert pair["forget_test_error"]["better"] == "close"  # ≈ retrained: distance to it
  assert pair["forget_test_error"]["measure"] == "distance to retrained"
  assert pair["forget_test_error"]["mean"] == pytest.approx(-1.0, abs=0.02)
  assert pair["wasserstein_to_retrained"]["measure"] == "value"  # a distance already
  assert pair["wasserstein_to_retrained"]["better"] == "close"
  assert out["far vs retrained"]["forget_test_error"]["better"] == "retrained"
  with pytest.raises(UserError, match="no seed has results"):
    compare(_seeds(), ["close", "nobody"], keys)


def test_compare_needs_the_test_to_agree_with_the_interval():
  """Three seeds that all favour one model: the bootstrap interval excludes 0, but a Wilcoxon p
  of 0.25 is no evidence at 5%, so no winner is named."""
  out = compare(_seeds(3), ["close", "far"], ["retain_test_error"])["close vs far"]
  assert out["retain_test_error"]["ci95"][0] > 0 and out["retain_test_error"]["wilcoxon_p"] == 0.25
  assert out["retain_test_error"]["better"] is None


def test_compare_on_an_interval_containing_zero_names_no_winner():
  seeds = [{"a": {"retain_test_error": v}, "b": {"retain_test_error": 0.0}}
           for v in (1.0, -1.0, 0.5, -0.5)]
  out = compare(seeds, ["a", "b"], ["retain_test_error"])
  assert out["a vs b"]["retain_test_error"]["better"] is None


def test_noise_floor_tells_inside_from_outside():
  out = noise_floor(_seeds(), ["close", "far", FLOOR])
  assert list(out) == ["close", "far"]
  assert out["close"]["inside"] is True and out["close"]["ci95"][0] <= 0
  assert out["far"]["inside"] is False and out["far"]["mean"] == pytest.approx(1.0)
  assert noise_floor([{"x": {}, FLOOR: {}}], ["x"])["x"]["inside"] is None
  with pytest.raises(UserError, match="no seed has results"):
    noise_floor([{"close": {}}], ["close"])


def test_format_value_of_summaries():
  s = summarize([2.0, 4.0, 6.0])
  assert format_value(s) == "4 ± 2"
  assert format_value(s, interval=True) == "4 ± 2 [-0.9683, 8.968]"
  assert format_value(summarize([3.0, 3.72, 3.36])) == "3.36 ± 0.36"
  assert format_value(summarize([True, False, False, False])) == "0.25"
  assert format_value(summarize([None, None])) == "n/a"
  assert format_value({"values": ["a", "b"]}) == "n/a"


def test_markdown_of_aggregated_rows_keeps_marks():
  seeds = [{"m": {"ain": 1.0, "ain_hit_cap": False, "mia_forget": 0.5},
            "n": {"ain": 2.0, "ain_hit_cap": False, "mia_forget": 0.5}},
           {"m": {"ain": 3.0, "ain_hit_cap": True, "mia_forget": 0.5},
            "n": {"ain": 2.0, "ain_hit_cap": False, "mia_forget": None}}]
  agg = aggregate(seeds)
  lines = write_markdown(agg, columns=("ain", "mia_forget")).splitlines()
  assert lines[2] == "| m | 2 ± 1.4 (cap) | 0.5 ± 0 |"
  assert lines[3] == "| n | 2 ± 0 | 0.5 ± 0 |"
  wide = write_markdown(agg, columns=("ain",), interval=True).splitlines()
  assert wide[2].startswith("| m | 2 ± 1.4 [") and wide[2].endswith("] (cap) |")
  assert wide[3] == "| n | 2 ± 0 [2, 2] |"


def test_comparison_and_floor_tables():
  seeds = _seeds()
  text = write_comparisons(compare(seeds, ["close", "far"],
                                   ["retain_test_error", "forget_test_error"]),
                           ["forget_test_error"])
  lines = text.splitlines()
  assert lines[0].startswith("| A vs B | key |")
  assert len([line for line in lines if line.startswith("| close vs far")]) == 1
  row = lines[2].split(" | ")
  assert "(distance to retrained)" in row[1] and row[2] == "8" and row[-1] == "close |"
  floor = write_floor(noise_floor(seeds, ["close", "far"])).splitlines()
  assert floor[0].startswith(f"| model | seeds | Wasserstein to retrained − {FLOOR} |")
  assert floor[2].startswith("| close | 8 |") and floor[2].endswith("| yes |")
  assert floor[3].endswith("| no |")


def test_plot_seeds_writes_a_png(tmp_path):
  seeds = _seeds(3)
  seeds[1]["far"]["retain_test_error"] = None
  path = plot_seeds(seeds, str(tmp_path / "plots"))
  assert path == str(tmp_path / "plots" / "seeds.png")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
