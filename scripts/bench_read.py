"""Benchmark: memory and throughput of reading a checkpoint, as ratios measured in one run.

Generates a Llama-shaped bf16 checkpoint of about ``--gib`` GiB (sharded like a Hugging Face
export), then measures, each in a fresh process so peaks don't mix:

* the interpreter with lineage imported (baseline resident memory);
* ``lineage inspect`` (headers, roles and sha256 of every file);
* a full tensor sweep (every tensor read and reduced: norms, std, NaN/Inf count);
* a plain sequential read of the same files with the page cache warm (the floor).

and prints peak RSS as a ratio to the largest tensor (net of the baseline) and the sweep's time
as a ratio to the plain read. Usage: ``python scripts/bench_read.py [--gib 1.0] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = r"""
import json, sys, time
from pathlib import Path
what, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if what == "baseline":
    import verifier.model, verifier.sweep  # noqa: F401
elif what == "inspect":
    from verifier.inspect import inspect_model
    from verifier.model import open_model
    with open_model(path) as m:
        inspect_model(m)
elif what == "sweep":
    from verifier.readers import open_checkpoint
    from verifier.sweep import sweep
    import verifier.model  # noqa: F401  (same imports as the other runs)
    with open_checkpoint(path) as r:
        sweep(r)
elif what == "read":
    import verifier.model  # noqa: F401
    buf = bytearray(16 << 20)
    for f in sorted(Path(path).glob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
seconds = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its parent's peak
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "maxrss": hwm * 1024}))
"""


def build(folder: Path, gib: float) -> int:
    """Write the checkpoint; return the byte size of its largest tensor."""
    import torch
    from safetensors.torch import save_file

    hidden, ffn, vocab, kv = 2048, 5504, 32000, 512
    per_layer = (2 * hidden * hidden + 2 * kv * hidden + 3 * hidden * ffn + 2 * hidden) * 2
    fixed = 2 * vocab * hidden * 2
    layers = max(1, round((gib * (1 << 30) - fixed) / per_layer))
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
              "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": 16,
              "num_key_value_heads": 4, "vocab_size": vocab, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    weight_map: dict[str, str] = {}
    shard = {"model.embed_tokens.weight": r(vocab, hidden), "lm_head.weight": r(vocab, hidden),
             "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    names = ["embed"]
    shards: list[dict] = [shard]
    for i in range(layers):
        p = f"model.layers.{i}."
        shards.append({
            p + "self_attn.q_proj.weight": r(hidden, hidden),
            p + "self_attn.k_proj.weight": r(kv, hidden),
            p + "self_attn.v_proj.weight": r(kv, hidden),
            p + "self_attn.o_proj.weight": r(hidden, hidden),
            p + "mlp.gate_proj.weight": r(ffn, hidden),
            p + "mlp.up_proj.weight": r(ffn, hidden),
            p + "mlp.down_proj.weight": r(hidden, ffn),
            p + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
        })
        names.append(str(i))
    n = len(shards)
    for k, part in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, fname)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return vocab * hidden * 2


def measure(what: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, str(path)], check=True, capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size to generate")
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "ckpt"
        largest = build(folder, args.gib)
        total = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        measure("read", folder)  # warm the page cache
        runs = {w: measure(w, folder) for w in ("baseline", "inspect", "sweep", "read")}
    mib = 1 << 20
    base = runs["baseline"]["maxrss"]
    print(f"checkpoint: {total / mib:.0f} MiB, "
          f"largest tensor {largest / mib:.0f} MiB, baseline RSS {base / mib:.0f} MiB")
    print(f"{'run':<10}{'seconds':>10}{'peak RSS MiB':>15}{'net / largest':>16}")
    for what, r in runs.items():
        net = (r["maxrss"] - base) / largest
        print(f"{what:<10}{r['seconds']:>10.2f}{r['maxrss'] / mib:>15.0f}{net:>16.2f}")
    ratio = runs["sweep"]["seconds"] / runs["read"]["seconds"]
    print(f"sweep time / plain sequential read: {ratio:.2f}")
    print(f"plain read throughput: {total / runs['read']['seconds'] / (1 << 30):.2f} GiB/s; "
          f"sweep throughput: {total / runs['sweep']['seconds'] / (1 << 30):.2f} GiB/s")


if __name__ == "__main__":
    main()
