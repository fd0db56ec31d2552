"""The README's library example runs as written."""
import os
import re


def test_readme_library_example_runs(capsys):
  readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
  blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert blocks, "the README has a python example"
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # our own README, not user input
  out = capsys.readouterr().out
  assert "| blindspot |" in out and "| retrained |" in out
