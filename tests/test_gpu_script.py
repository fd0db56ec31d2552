"""experiments/gpu_bench.sh, the benchmark for a GPU machine without network, run here on the
CPU with --quick: it installs the wheels it is given into a scratch folder, runs every part into
its own folder, reports each in summary.md, and refuses bad options."""
import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "gpu_bench.sh")
WAIT_S = 600  # bound on the quick run (about 1.5 minutes on 2 CPU cores)
RAN = ("smoke", "allcnn", "resnet18", "ensemble", "audit")
SKIPPED = ("epochs", "pipeline")  # minutes on a CPU even at their smallest, so --quick leaves them


def _probe_wheel(folder) -> str:
  """A tiny pure-Python wheel, so the install step runs wherever the tests do (.whl/ holds the
  GPU image's missing packages, which this environment already has)."""
  name, files = "gpu_bench_probe-1.0", {"gpu_bench_probe.py": b"VALUE = 1\n"}
  info = f"{name}.dist-info"
  files[f"{info}/METADATA"] = b"Metadata-Version: 2.1\nName: gpu-bench-probe\nVersion: 1.0\n"
  files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                            b"Tag: py3-none-any\n")

  def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

  record = "".join(f"{path},sha256={digest(data)},{len(data)}\n" for path, data in files.items())
  files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
  path = os.path.join(folder, f"{name}-py3-none-any.whl")
  with zipfile.ZipFile(path, "w") as z:
    for member, data in files.items():
      z.writestr(member, data)
  return path


# The conftest's persistent compilation cache, for the parts' processes too: the quick run checks
# the script, not compile times, and a rerun of the suite then compiles none of its programs.
CACHE = {"JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _run(args, **env):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=WAIT_S,
                        cwd=ROOT, env={**os.environ, **CACHE, "JAX_PLATFORMS": "cpu",
                                       "PYTHON": sys.executable, **env})


@pytest.mark.slow
def test_quick_run_reports_every_part(tmp_path):
  wheels, scratch, out = tmp_path / "wheels", tmp_path / "scratch", tmp_path / "out"
  wheels.mkdir()
  _probe_wheel(wheels)
  # Another platform's wheel is left alone, as the GPU image's own packages are.
  (wheels / "gpu_bench_other-1.0-cp27-cp27m-win32.whl").write_bytes(b"not opened")
  done = _run([str(out), "--device-kind", "cpu", "--quick"], GPU_BENCH_WHEELS=str(wheels),
              SCRATCH=str(scratch))
  log = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
  assert done.returncode == 0, log
  assert (scratch / "gpu_bench_probe.py").is_file(), log
  assert "skip gpu_bench_other-1.0-cp27-cp27m-win32.whl" in done.stderr, log

  summary = (out / "summary.md").read_text()
  assert "installed gpu_bench_probe-1.0-py3-none-any.whl" in summary
  assert "jax.devices(): [CpuDevice" in summary
  table = dict(re.findall(r"^\| (\w+) \| ([^|]+) \| [\d.]+ \|$", summary, re.M))
  assert list(table) == [*RAN[:4], "epochs", "audit", "pipeline"], summary
  for part in RAN:
    assert table[part] == "ok", summary
    assert f"## Part {part}: ok, " in summary
    assert (out / part / "bench.jsonl").stat().st_size > 0, part
    assert (out / part / "bench.md").read_text().startswith("# Benchmark")
  for part in SKIPPED:
    assert table[part] == "skipped (--quick)", summary
    assert f"## Part {part}: skipped under --quick" in summary
  assert "All parts that ran succeeded." in summary
  # The peer ran in the AllCNN part: its rows carry torch's time.
  assert "torch_step_s" in (out / "allcnn" / "bench.jsonl").read_text()
  # Each part's own rows reached summary.md, a level down.
  assert "### Ensembles: K models" in summary and "### Audit: N shadow models" in summary


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option --bogus"),
    (["--device-kind", "fpga"], "--device-kind is one of auto, cpu, gpu, tpu"),
    (["--device-kind"], "--device-kind needs a value"),
    (["--parts", "smoke,nope"], "unknown part 'nope'"),
    (["a", "b"], "one output folder"),
])
def test_bad_usage_exits_with_a_message(tmp_path, args, message):
  done = _run(["--quick", *args], OUT=str(tmp_path / "out"))
  assert done.returncode == 2, done.stdout + done.stderr
  assert message in done.stderr and "usage:" in done.stderr
  assert not (tmp_path / "out").exists()  # refused before running anything
  assert not os.path.exists(os.path.join(ROOT, "a"))
