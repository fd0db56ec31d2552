"""The README's library examples run as written, in order, in one namespace."""
import os
import re

from jax_unlearn import metrics


def test_readme_library_examples_run(capsys):
  readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert len(blocks) == 2, "the README has the library example and a metric of one's own"
  namespace = {}
  try:
    for block in blocks:
      exec(compile(block, "README.md", "exec"), namespace)  # our own README, not user input
  finally:
    if "forget_mean_gap" in metrics.names():
      metrics.unregister("forget_mean_gap")
  out = capsys.readouterr().out
  assert "| blindspot |" in out and "| retrained |" in out
  assert "forget mean gap ↓" in out
  gaps = namespace["evaluation"].results
  assert gaps["retrained"]["forget_mean_gap"] == 0.0 and gaps["original"]["forget_mean_gap"] > 0
