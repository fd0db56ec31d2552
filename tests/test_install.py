"""The package as a user installs it: a wheel built from the sources, installed into a fresh
virtual environment outside the source tree, runs the demo and a shipped config by name from
another directory, and finds its benchmark."""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT_S = 300  # bound on every command


def _call(args, **kwargs):
  done = subprocess.run(args, capture_output=True, text=True, timeout=WAIT_S, **kwargs)
  assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout[-3000:]}" \
                               f"\n{done.stderr[-3000:]}"
  return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(the venv's jax-unlearn command, a working directory outside the source tree)."""
  base = tmp_path_factory.mktemp("install")
  # Build from a copy holding only what the build reads, so nothing is written into the tree.
  src = base / "src"
  shutil.copytree(os.path.join(ROOT, "jax_unlearn"), src / "jax_unlearn",
                  ignore=shutil.ignore_patterns("__pycache__", "*.so"))
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  wheels = base / "wheels"
  _call([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(wheels), str(src)])
  (wheel,) = glob.glob(str(wheels / "jax_unlearn-*.whl"))
  venv = base / "venv"
  _call([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
         str(venv)])
  python = str(venv / "bin" / "python")
  _call([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", wheel])
  # The dependencies come from this environment's site-packages as a plain path: its .pth files
  # (among them the editable install of the source tree) are not read, so only the wheel
  # provides jax_unlearn.
  site = _call([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
  with open(os.path.join(site.stdout.strip(), "deps.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  work = base / "elsewhere"
  work.mkdir()
  return str(venv / "bin" / "jax-unlearn"), str(wheel), str(work)


def test_the_wheel_ships_the_configs_the_benchmark_and_the_kernel_source(installed):
  _, wheel, _ = installed
  names = set(zipfile.ZipFile(wheel).namelist())
  assert {"jax_unlearn/configs/demo.py", "jax_unlearn/configs/base.py",
          "jax_unlearn/bench/torch_peer.py", "jax_unlearn/ops/onednn_conv.cc"} <= names
  assert not any(n.startswith(("tests/", "experiments/")) for n in names)


def _run(installed, *args):
  command, _, work = installed
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return _call([command, *args], cwd=work, env=env)


@pytest.mark.parametrize("args", [("demo",), ("run", "--config", "diabetes_mlp")],
                         ids=["demo", "named-config"])
def test_the_installed_command_runs_outside_the_source_tree(installed, args):
  command, _, work = installed
  workdir = os.path.join(work, "runs", args[-1])
  cache = jax.config.jax_compilation_cache_dir or "none"
  _run(installed, *args, "--workdir", workdir, "--quiet", "--cache-dir", cache,
       "--config.smoke=True", "--config.seeds=1")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert {"original", "retrained", "finetune"} <= set(results["models"])
  # The package that ran is the wheel's, not the source tree's.
  where = _call([os.path.join(os.path.dirname(command), "python"), "-c",
                 "import jax_unlearn; print(jax_unlearn.__file__)"], cwd=work)
  assert not where.stdout.strip().startswith(ROOT), where.stdout


def test_the_installed_benchmark_starts(installed):
  done = _run(installed, "bench", "--help")
  assert "--ensemble" in done.stdout
