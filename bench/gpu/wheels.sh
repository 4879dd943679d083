#!/usr/bin/env bash
# Prepare, HERE (not on the GPU machine: it reaches no network), what the GPU kit needs there that
# the machine's image lacks, into bench/gpu/wheels/ (gitignored: name it in the device tool's
# `carry`). Then check it with the dry run as that image would run it. bench/RESULTS.md, "GPU".
#
#   bash bench/gpu/wheels.sh           # ~1 MB today; prints the carry line
#
# 1. Wheels for Python 3.12 / manylinux x86-64 of exactly the packages the kit imports that the
#    image lacks (bench/gpu/image-packages.txt lists the image). The kit imports torch,
#    transformers, tokenizers, safetensors, numpy, pyarrow and these project modules:
#    lantern_batch.{classifier, precompute.classifier_stage, precompute.route, distill.decoder,
#    distill.losses, prompts, taxonomy, models, schema, logs, errors}. All of those import without
#    Ray, vLLM, DeepSpeed and pydantic (their configs, which need pydantic, are not imported),
#    so the list below is empty. A change that makes one of them need another package fails
#    tests/integration/test_gpu_kit.py, which runs the dry run with every package the image
#    lacks hidden; add that package (and its own needs) to NEEDED, pinned to the local version.
#
#    vLLM is left out. vllm==0.26.0 is the one release that matches the image's torch 2.11.0, and
#    its wheel alone is ~304 MB (plus ~30 MB of its own needs: msgspec, pyzmq, xgrammar,
#    llguidance, outlines_core, blake3, cbor2, gguf, compressed-tensors, depyf, openai, fastapi,
#    pydantic...), where one device call carries at most 64 MiB. Split into 60 MB parts it takes
#    six consecutive calls of one warm lease before the first measurement, each paying its
#    transfer, out of 15 minutes of device time that the kit itself needs 8 of; and the
#    explainer's generation is measured with transformers in the same run. The kit runs vLLM,
#    on the same prompts, wherever `import vllm` works, and says why not where it does not.
#
# 2. MiniLM-L6's config.json and tokenizer files (no weights: ~0.7 MB) into wheels/minilm/, from
#    the bundled model: the image has no copy, and the kit's MiniLM there is random weights of
#    this config with this tokenizer (throughput does not depend on weight values; the 90 MB of
#    weights do not fit a call beside anything else).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
py="${PYTHON:-$ROOT/.venv/bin/python}"
dest="$ROOT/bench/gpu/wheels"

NEEDED=()  # distribution names; versions are taken from the local environment

mkdir -p "$dest"
rm -f "$dest"/*.whl
for name in ${NEEDED[@]+"${NEEDED[@]}"}; do
  version="$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "$name==$version"
done

rm -rf "$dest/minilm"
mkdir -p "$dest/minilm"
"$py" - "$dest/minilm" <<'EOF'
import shutil, sys
from pathlib import Path

from lantern_batch.models import resolve

src = Path(resolve("bundled:minilm"))
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (src / name).is_file():
        shutil.copy2(src / name, Path(sys.argv[1]) / name)
EOF

# The dry run as the image would run it: what the image lacks is hidden, these wheels are not.
check="$(mktemp -d)"
bash bench/gpu/run.sh --cpu --tiny --simulate-image --out "$check" >"$check/log.txt" 2>&1 || {
  tail -30 "$check/log.txt"
  echo "wheels.sh: the dry run failed with the image's packages only (log above); see NEEDED" >&2
  exit 1
}
grep -q '"tokenizer": "bench/gpu/wheels/minilm"' "$check/gpu-dryrun.json" || {
  echo "wheels.sh: the dry run did not use $dest/minilm" >&2
  exit 1
}
rm -rf "$check"

echo "bench/gpu/wheels: $(find "$dest" -name '*.whl' | wc -l) wheel(s), $(du -sh "$dest" | cut -f1) in all"
echo "device call: run(command='bash bench/gpu/run.sh', timeout_s=540, carry=['bench/gpu/wheels'])"
