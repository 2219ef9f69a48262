#!/usr/bin/env bash
# The speed benches at full depth on one GPU: random weights at the real widths, bf16, SDPA.
#   CLIP-L/336 (24 blocks) and SigLIP SO400M (26 blocks) encoders, batch 8, DToMe-low;
#   LLaVA-1.5-7B (Llama, 32 layers) and OneVision-Qwen2-7B (28 layers) decoders: VTU, FastV, PDrop, DART, decode.
# Writes one JSON (default benchmarks/gpu.json; first argument overrides) holding each bench's JSON.
# Budget: under 5 minutes on one H100 (each run builds its model on the GPU directly).
set -euo pipefail
out="${1:-benchmarks/gpu.json}"
py="${PYTHON:-python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
common=(--device cuda --dtype bfloat16 --repeats 5 --warmup 2)
"$py" -m dymu_eval.cli bench encoder --shape clip-l-336 --layers 24 --batch-size 8 "${common[@]}" --json "$tmp/encoder-clip-l-336.json"
"$py" -m dymu_eval.cli bench encoder --shape siglip-so400m --layers 26 --batch-size 8 "${common[@]}" --json "$tmp/encoder-siglip-so400m.json"
"$py" -m dymu_eval.cli bench language --shape llava-1.5-7b --layers 32 --unique-image 89 "${common[@]}" --json "$tmp/language-llava-1.5-7b.json"
"$py" -m dymu_eval.cli bench language --shape onevision-qwen2-7b --layers 28 --unique-image 89 "${common[@]}" --json "$tmp/language-onevision-qwen2-7b.json"
"$py" - "$tmp" "$out" <<'PY'
import json, pathlib, sys
runs = {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(runs, indent=1) + "\n")
print(f"wrote {sys.argv[2]} ({', '.join(runs)})")
PY
