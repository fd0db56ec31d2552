"""Two processes on loopback (jax.distributed + gloo) train exactly like one process."""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(WORKER), env.get("PYTHONPATH", "")])
  return env


def _run(procs, timeout=240) -> list[str]:
  """Waits for every process (killing them all past `timeout`); returns their stderr."""
  errors = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      assert p.returncode == 0, err.decode()[-3000:]
      errors.append(err.decode())
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return errors


def _workers(processes: int, out, *args) -> None:
  port = _free_port()
  _run([subprocess.Popen([sys.executable, WORKER, str(port), str(processes), str(i), str(out),
                          *map(str, args)],
                         env=_env(4 // processes), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(processes)])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  """Training (plain, on fixed shards, on streamed inputs) as 1 x 4 and 2 x 2 devices, and a
  run cut mid-epoch by one process count and finished by the other."""
  single, multi, back = tmp_path / "single.npz", tmp_path / "multi.npz", tmp_path / "back.npz"
  _workers(1, single, "-", tmp_path / "cut1")
  shutil.copytree(tmp_path / "cut1", tmp_path / "cut1_for_two")
  _workers(2, multi, tmp_path / "cut1_for_two", tmp_path / "cut2")
  _workers(1, back, tmp_path / "cut2", "-", "resume")
  a, b, c = np.load(single), np.load(multi), np.load(back)
  assert int(a["devices"]) == int(b["devices"]) == 4
  assert int(b["processes"]) == 2
  keys = [k for k in a.files if k.startswith(("plain_", "sharded_", "streamed_"))]
  assert len(keys) == 12
  for key in keys:
    if key.startswith("plain_"):  # the all-reduce sums in another order: float rounding
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
    else:  # fixed shards: the same bits, in memory or streamed
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], a[key.replace("streamed_", "sharded_")])
  ensemble = [k for k in a.files if k.startswith("ensemble_")]
  assert len(ensemble) == 5 and a["ensemble_0"].shape[0] == 4  # 4 leaves of 4 members, the lr
  for key in ensemble:  # members on other hosts: whole members per device, the same bits
    np.testing.assert_array_equal(a[key], b[key])
  for i in range(4):  # cut by one process count mid-epoch, finished by the other: the same bits
    np.testing.assert_array_equal(b[f"resumed_{i}"], a[f"sharded_{i}"])
    np.testing.assert_array_equal(c[f"resumed_{i}"], a[f"sharded_{i}"])
  # Streamed, each process read only its half of every batch: disjoint rows, all of them.
  rows = [set(np.load(f"{multi}.rows{i}.npy").tolist()) for i in range(2)]
  assert not rows[0] & rows[1] and rows[0] | rows[1] == set(range(64))
  assert set(np.load(f"{single}.rows0.npy").tolist()) == set(range(64))


# The whole pipeline from the command line, on fixed batch blocks, so any device count and any
# process count dividing them computes the same bits.
# The conftest's persistent compilation cache: no process compiles what another already has.
CLI = [sys.executable, "-m", "jax_unlearn", "run", "--config", "diabetes_mlp", "--quiet",
       "--config.smoke=True", "--config.batch_shards=4", "--config.plots=False",
       "--cache-dir", jax.config.jax_compilation_cache_dir or "none"]


def _slurm_job() -> int:
  """A job id whose coordinator port (JAX derives it from the id) is free on loopback."""
  for job in range(1000, 1000 + 4096):
    try:
      with socket.socket() as s:
        s.bind(("127.0.0.1", job % 4096 + 65536 - 4096))
      return job
    except OSError:
      continue
  raise RuntimeError("no free port for a Slurm job")


def _cli(workdir, processes: int, launcher: str = "jax", *extra: str):
  """The CLI as `processes` processes of 4 / processes devices each, on loopback, told their
  ranks by JAX's variables or, as a Slurm launch would, by Slurm's."""
  port, job = _free_port(), _slurm_job()
  procs = []
  for i in range(processes):
    env = _env(4 // processes)
    if processes > 1 and launcher == "jax":
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                 JAX_PROCESS_ID=str(i))
    elif processes > 1:
      env.update(SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="127.0.0.1",
                 SLURM_NTASKS=str(processes), SLURM_PROCID=str(i), SLURM_LOCALID=str(i))
    procs.append(subprocess.Popen(CLI + ["--workdir", str(workdir), *extra], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  errors = _run(procs)
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f), errors


STAGES = ["original", "retrained", "blindspot", "finetune", "gaussian"]


@pytest.mark.slow
def test_the_cli_as_two_processes_gives_the_one_process_results(tmp_path):
  """Two models per stage, one on each process: every metric of every model is the one
  process's, bit for bit; a 2-process rerun reuses the stages one process trained. (One
  process resuming what two wrote: `test_two_processes_match_one`.)"""
  seeds = "--config.seeds=2"
  one, _ = _cli(tmp_path / "one", 1, "jax", seeds)
  two, _ = _cli(tmp_path / "two", 2, "jax", seeds)
  assert len(two["devices"]) == len(one["devices"]) == 4
  assert two["models"] == one["models"] and two["seeds"] == one["seeds"] == [0, 1]
  assert two["reused"] == [] and os.path.isdir(tmp_path / "two" / "tensorboard")
  # The 2-process rerun is launched as Slurm would, with none of JAX's variables.
  shutil.copytree(tmp_path / "one", tmp_path / "one_then_two")
  again, errors = _cli(tmp_path / "one_then_two", 2, "slurm", seeds)
  assert all("joining a Slurm run of 2 processes" in e for e in errors)
  assert len(again["devices"]) == 4
  assert again["reused"] == STAGES
  assert again["models"] == one["models"]


@pytest.mark.parametrize("processes, overrides, match", [
    (2, {"seeds": "3"}, "3 models per stage .seeds. do not split over 2 processes"),
    (3, {"seeds": "3", "audit.enabled": "True", "audit.shadows": "8"},
     "8 shadow models do not split over 3 processes")])
def test_members_that_do_not_split_over_the_processes_fail_first(processes, overrides, match,
                                                                   monkeypatch):
  from jax_unlearn import config_io
  from jax_unlearn.errors import UserError
  c = config_io.load_config("diabetes_mlp")
  for key, value in overrides.items():
    config_io.apply_override(c, key, value)
  config_io.check_config(c)  # one process: any count
  monkeypatch.setattr(config_io.jax, "process_count", lambda: processes)
  with pytest.raises(UserError, match=match):
    config_io.check_config(c)


def test_cluster_detection_reads_the_launchers_variables():
  from jax_unlearn import parallel
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "8",
           "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
  assert parallel.detected_cluster(slurm) == ("Slurm", 8)
  assert parallel.detected_cluster({**slurm, "SLURM_NTASKS": "1"}) is None  # one task: no run
  assert parallel.detected_cluster({k: v for k, v in slurm.items() if k != "SLURM_PROCID"}) is None
  mpi = {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"}
  assert parallel.detected_cluster(mpi) == ("Open MPI", 4)
  assert parallel.detected_cluster({}) is None
