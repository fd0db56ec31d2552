#!/usr/bin/env bash
# Downloads into .whl/ the wheels that `python -m jax_unlearn.bench` (demo pipeline included)
# imports and a fixed GPU image (Python 3.12, jax/flax/optax/orbax/chex/numpy/scipy/sklearn/
# matplotlib/tqdm/absl/pandas/torch and their dependencies) lacks; experiments/gpu_bench.sh
# installs them there without network (README, "Benchmarking on a GPU machine without network").
#
#   experiments/gpu_wheels.sh            # from the repository root; PYTHON=... picks the pip
set -euo pipefail

cd "$(dirname "$0")/.."
dest=.whl
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi

# Found by running every part of the benchmark, and --pipeline demo in its subprocess, with the
# modules of distributions outside the image's dependency closure made unfindable: only these
# two are needed (ml_collections: the configs; tensorboardX: the pipeline's event log). Optional
# imports that libraries guard themselves (Cython by scipy, pyarrow by pandas, hypothesis and
# dm-tree by torch) are not; tensorflow-datasets, grain and array_record are imported only by
# other datasets' loaders, and the GloVe package only by the text data.
PACKAGES=(ml_collections tensorboardX)

# Versions pinned in requirements.txt: what the tests here ran with.
pins=()
for name in "${PACKAGES[@]}"; do
  pin=$(grep -iE "^${name//[-_]/[-_]}==" requirements.txt | head -n1 | cut -d';' -f1 | tr -d ' ')
  if [[ -z $pin ]]; then
    echo "error: $name is not pinned in requirements.txt" >&2
    exit 2
  fi
  pins+=("$pin")
done

# A fresh folder, swapped in only once every download succeeded, so stale versions go.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_wheels.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
  -d "$tmp" "${pins[@]}"
rm -rf "$dest"
mkdir -p "$dest"
mv "$tmp"/*.whl "$dest"/

got=("$dest"/*.whl)
du -b "${got[@]}"
bytes=$(du -cb "${got[@]}" | tail -n1 | cut -f1)
echo "$dest: ${#got[@]} wheels, $bytes bytes in all ($(du -sh "$dest" | cut -f1))"
if ((bytes > 64 * 1024 * 1024)); then
  echo "error: $dest is over 64 MiB, more than can be carried to the GPU machine" >&2
  exit 1
fi
