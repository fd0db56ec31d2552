import glob
import os

import ml_collections
import pytest

from jax_unlearn import config_io
from jax_unlearn.errors import UserError

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                        "configs", "*.py")))
CONFIGS = [p for p in CONFIGS if os.path.basename(p) not in ("__init__.py", "base.py")]


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_names_its_run_command(path):
  c = config_io.load_config(path)
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.experiment and c.data.name and c.model.name
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert "jax-unlearn" in (module.__doc__ or ""), "the docstring shows the command that runs it"


def _demo():
  return config_io.load_config(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                            "configs", "demo.py"))


def test_overrides_are_typed():
  c = _demo()
  for key, value in config_io.parse_overrides(
      ["--config.train.epochs=3", "--config.train.lr", "1e-4", "--config.smoke=True",
       "--config.forget.high=-10", "--config.data.kwargs.path=/tmp/x.npz",
       "--config.methods.blindspot.attention=reference"]):
    config_io.apply_override(c, key, value)
  assert c.train.epochs == 3 and c.train.lr == 1e-4 and c.smoke is True
  assert c.forget.high == -10.0 and isinstance(c.forget.high, float)
  assert c.data.kwargs.path == "/tmp/x.npz"
  assert c.methods.blindspot.attention == "reference"


def test_override_typo_suggests_the_field():
  with pytest.raises(UserError, match="unknown config field 'train.epoch'") as e:
    config_io.apply_override(_demo(), "train.epoch", "3")
  assert "--config.train.epochs" in e.value.hint


def test_override_of_wrong_type_is_rejected():
  with pytest.raises(UserError, match="is a str"):
    config_io.apply_override(_demo(), "train.epochs", "many")


def test_missing_config_file_and_bad_arguments():
  with pytest.raises(UserError, match="does not exist"):
    config_io.load_config("nope.py")
  with pytest.raises(UserError, match="unexpected argument"):
    config_io.parse_overrides(["--epochs=3"])
