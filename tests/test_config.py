import os

import ml_collections
import numpy as np
import pytest

from jax_unlearn import config_io, configs
from jax_unlearn.data import make_forget_masks
from jax_unlearn.data.base import Split, make_dataset
from jax_unlearn.data.forget import SETTINGS
from jax_unlearn.errors import UserError

CONFIGS = config_io.shipped_configs()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_and_names_its_run_command(name):
  c = config_io.load_config(name)
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.experiment and c.data.name and c.model.name
  # The command its docstring shows parses and runs this very config.
  import importlib
  import shlex
  from jax_unlearn import cli
  module = importlib.import_module(f"jax_unlearn.configs.{name}")
  text = (module.__doc__ or "").replace("\\\n", " ")
  commands = [line.strip() for line in text.splitlines()
              if "jax-unlearn run" in line or "jax-unlearn tune" in line]
  assert commands, "the docstring shows the command that runs it"
  argv = shlex.split(commands[0].split("jax-unlearn", 1)[1])
  args, rest = cli._parser().parse_known_args(argv)
  assert args.config == name
  config = config_io.load_config(args.config)
  for key, value in config_io.parse_overrides(rest):
    config_io.apply_override(config, key, value)


def _demo():
  return config_io.load_config("demo")


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
  with pytest.raises(UserError, match="'nope.py' is neither a file nor a shipped config"):
    config_io.load_config("nope.py")
  with pytest.raises(UserError) as e:
    config_io.load_config("dmeo")
  assert "did you mean 'demo'?" in e.value.hint and "rotdigits_allcnn" in e.value.hint


def test_shipped_configs_load_by_name_and_by_path():
  names = config_io.shipped_configs()
  assert {"demo", "rotdigits_allcnn", "stsb_lstm"} <= set(names)
  by_path = config_io.load_config(os.path.join(os.path.dirname(configs.__file__), "demo.py"))
  assert config_io.load_config("demo").to_dict() == by_path.to_dict()
  with pytest.raises(UserError, match="unexpected argument"):
    config_io.parse_overrides(["--epochs=3"])


def _grouped_dataset():
  """20 train rows in groups 0..9 (two each), labels far from the demo's label range."""
  def split(groups):
    n = len(groups)
    return Split(np.zeros((n, 3), np.float32), np.full((n, 1), 50.0, np.float32),
                 np.asarray(groups, np.int64))
  return make_dataset("grouped", split(np.arange(20) % 10), split([7, 1]), split([7, 7, 2]),
                      loss="l1", error="mae", kind="tabular", label="t")


def _override(c, *args):
  for key, value in config_io.parse_overrides(list(args)):
    config_io.apply_override(c, key, value)
  return c


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_can_switch_forget_kind(name):
  c = config_io.load_config(name)
  assert set(SETTINGS) <= set(c.forget)  # every kind's argument is a field to override
  _override(c, "--config.forget.kind=groups", "--config.forget.ids=[7]")
  m = make_forget_masks(_grouped_dataset(), c.forget.to_dict())
  np.testing.assert_array_equal(np.flatnonzero(m.train), [7, 17])


def test_demo_forgets_one_group_from_the_command_line():
  c = _override(_demo(), "--config.forget.kind=groups", "--config.forget.ids=[7]")
  assert c.forget.kind == "groups" and c.forget.ids == [7] and c.forget.high == -30.0
  ds = _grouped_dataset()
  m = make_forget_masks(ds, c.forget.to_dict())
  np.testing.assert_array_equal(m.train, ds.train.group == 7)
  np.testing.assert_array_equal(m.val, [True, False])
  np.testing.assert_array_equal(m.test, [True, True, False])


def test_demo_forgets_an_ids_file_from_the_command_line(tmp_path):
  ds = _grouped_dataset()
  groups, rows = tmp_path / "groups.txt", tmp_path / "rows.txt"
  groups.write_text("# deletion request\n3\n\n5\n")
  rows.write_text("0\n# row 1 stays\n19\n")
  c = _override(_demo(), "--config.forget.kind=groups", f"--config.forget.ids_file={groups}")
  m = make_forget_masks(ds, c.forget.to_dict())
  np.testing.assert_array_equal(np.flatnonzero(m.train), [3, 5, 13, 15])
  c = _override(_demo(), "--config.forget.kind=indices", "--config.forget.ids_file", str(rows))
  m = make_forget_masks(ds, c.forget.to_dict())
  np.testing.assert_array_equal(np.flatnonzero(m.train), [0, 19])
  assert not m.val.any() and not m.test.any()


def test_forget_overrides_that_cannot_apply():
  ds = _grouped_dataset()
  c = _override(_demo(), "--config.forget.kind=groups")
  with pytest.raises(UserError, match="needs the argument 'ids'") as e:
    make_forget_masks(ds, c.forget.to_dict())
  assert "ids_file" in e.value.hint
  c = _override(_demo(), "--config.forget.kind=groups", "--config.forget.ids=[7]",
                "--config.forget.ids_file=req.txt")
  with pytest.raises(UserError, match="both 'ids' and 'ids_file'") as e:
    make_forget_masks(ds, c.forget.to_dict())
  assert "--config.forget.ids=None" in e.value.hint
  c = _override(_demo(), "--config.forget.kind=groups", "--config.forget.ids=[7]",
                "--config.forget.ids=None", "--config.forget.ids_file=missing.txt")
  with pytest.raises(UserError, match="cannot read the forget ids file 'missing.txt'"):
    make_forget_masks(ds, c.forget.to_dict())
  with pytest.raises(UserError, match="unknown config field 'forget.id'") as e:
    config_io.apply_override(_demo(), "forget.id", "[7]")
  assert "--config.forget.ids" in e.value.hint
  c = _override(_demo(), "--config.forget.kind=group")
  with pytest.raises(UserError, match="unknown forget kind 'group'.*did you mean 'groups'"):
    make_forget_masks(ds, c.forget.to_dict())


def test_a_method_variant_runs_its_method_under_its_own_label():
  from jax_unlearn import configs
  c = _demo()
  c.methods.blindspot_beta0 = configs.method_variant("blindspot", beta=0.0, blindspot_epochs=5)
  assert configs.method_of(c, "blindspot_beta0") == "blindspot"
  assert configs.method_of(c, "blindspot") == "blindspot"
  s = configs.method_settings(c, "blindspot_beta0")
  assert s["beta"] == 0.0 and s["blindspot_epochs"] == 5 and "method" not in s
  assert s["batch_size"] == c.train.batch_size  # inherited as the method's own entry
  with pytest.raises(UserError, match="blindspot_epochs"):
    configs.method_variant("blindspot", blindspot_epoch=5)
  c.methods.bad = configs.method_variant("blindspot")
  c.methods.bad.method = "blindspt"
  with pytest.raises(UserError, match="blindspot"):
    configs.method_settings(c, "bad")


def test_a_method_that_trains_as_the_original_inherits_its_recipe():
  """sisa's shard models take the config's `train` recipe unless the entry sets its own."""
  c = _demo()
  c.methods.sisa = configs.method_entry("sisa")
  c.methods.sisa_fast = configs.method_variant("sisa", epochs=2)
  own = configs.method_settings(c, "sisa")
  for key in ("epochs", "lr", "plateau_factor", "plateau_patience", "batch_size"):
    assert own[key] == c.train[key], key
  assert configs.method_settings(c, "sisa_fast")["epochs"] == 2
  assert configs.method_settings(c, "finetune")["epochs"] != c.train.epochs  # its own


def test_a_method_setting_out_of_range_fails_before_any_training(tmp_path):
  from jax_unlearn import configs, pipeline
  c = _demo()
  c.methods.neggrad = configs.method_variant("neggrad", alpha=1.5)
  with pytest.raises(UserError, match=r"neggrad.alpha must be a finite number in \[0, 1\]"):
    pipeline.run_experiment(c, str(tmp_path), quiet=True)
  assert not os.path.exists(tmp_path / "checkpoints")
