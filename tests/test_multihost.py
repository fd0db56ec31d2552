"""Two processes on loopback (jax.distributed + gloo) train exactly like one process."""
import os
import socket
import subprocess
import sys

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


def _run(procs, timeout=240):
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      assert p.returncode == 0, err.decode()[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  single = tmp_path / "single.npz"
  _run([subprocess.Popen([sys.executable, WORKER, "0", "1", "0", str(single)], env=_env(4),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)])
  port = _free_port()
  multi = tmp_path / "multi.npz"
  _run([subprocess.Popen([sys.executable, WORKER, str(port), "2", str(i), str(multi)],
                         env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)])
  a, b = np.load(single), np.load(multi)
  assert int(a["devices"]) == int(b["devices"]) == 4
  assert int(b["processes"]) == 2
  keys = [k for k in a.files if k.startswith(("plain_", "sharded_"))]
  assert len(keys) == 8
  for key in keys:
    if key.startswith("plain_"):  # the all-reduce sums in another order: float rounding
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
    else:  # fixed shards: the same bits
      np.testing.assert_array_equal(a[key], b[key])
