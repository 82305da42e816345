"""Benchmark: `lineage verify` on pairs of realistic shape, as ratios measured in one run.

Generates on disk (bf16 safetensors, one shard per layer like a Hugging Face export) a dense
Llama-shaped base (default: a 7B slice: hidden 4096, FFN 11008, 32 heads / 8 KV heads, vocab
32000, ``--layers`` layers), a *derived* candidate (the base with a random signed permutation of
the hidden space, permuted FFN neurons and heads' order kept, Gaussian noise of relative size
``--drift`` on every matrix: what continued training plus a vendor's free re-parametrisation
looks like) and an *independent* candidate (a fresh draw); with ``--pairs upcycled`` or
``moe-independent``, Mixtral-style candidates with ``--experts`` experts per layer (fine-grained
upcycled from the base: four shuffled replicas of its FFN cut into slices, plus noise; or fresh
experts); with ``--pairs rotated``, the derived candidate with its hidden space turned by a
rotation instead of a signed permutation (what ``probes.rotated_layers`` guards against); with
``--pairs fp8``, the derived candidate stored as DeepSeek-V3 stores its weights (every
projection float8 with a ``weight_scale_inv`` per 128x128 block, dequantised on load). With
``--attention latent`` every model's attention is DeepSeek-V3's multi-head latent attention
(``--heads`` heads; query and key/value latents of ``--q-lora`` and ``--kv-lora``, per-head
key sizes 128 + 64 rotary, values 128) in place of Llama's, its latents' own coordinates
noised but not permuted. Then it measures, each verify in a fresh process:

* a plain sequential read of both checkpoints with the page cache warm (the floor), or with
  ``--cold`` from the disk (every measurement then starts with both dropped from the cache);
* the sha256 of both checkpoints alone, as lineage hashes them (files side by side in threads),
  as a ratio to that read: every report records it, and it is the slower read;
* `verify` wall time as a ratio to that read, and its phases (the report's ``timings``;
  ``hashing`` there is only the wait for digests the analysis did not hide). Verify hashes as
  by default; ``--no-hash`` measures it without the digests;
* with ``--cold``, the bytes the process read from the disk during each phase and in all, as
  a ratio to both checkpoints (``/proc/self/io``, sampled every 10 ms; the digests' threads
  read beside the phases): how far verify is from reading each byte once;
* peak private memory (RssAnon, sampled every 10 ms; the mapped page cache is not counted),
  net of the interpreter with lineage imported, as a ratio to the largest layer of either
  checkpoint;
* the verdicts and p-values;
* with ``--cache``, each verify again with one ``ModelCache`` folder shared by the candidates in
  turn (``lineage verify --cache-dir``): the first candidate's run fills the base's entries,
  the next reuses its digests, statistics, power check and its side of the null draws, as a QA
  job checking release after release against one base does.

Random weights are not trained weights (the test zoo is where calibration is measured); here
they only give realistic shapes and byte counts. Usage:
``python scripts/bench_verify.py [--layers 2] [--hidden 4096] [--ffn 11008] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MEASURE = r"""
import json, sys, threading, time
from pathlib import Path

def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) * 1024
    return 0

def disk_read():
    # bytes this process (all its threads) caused to be read from storage: page faults on the
    # mapped files, advised read-ahead, the digests' reads; not what came from the page cache
    for line in open("/proc/self/io"):
        if line.startswith("read_bytes"):
            return int(line.split()[1])
    return 0

peak = [rss_anon()]
reads = []  # (seconds since the clock started, bytes read from storage so far)
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        reads.append((time.perf_counter() - t0, disk_read()))
        time.sleep(0.01)

what, backend_name, options, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
import verifier.verify  # noqa: F401  (the interpreter with lineage imported is the baseline)
from verifier.allocator import tune_allocator
allocator = tune_allocator()  # as the command line does
import backends
backend, _ = backends.select(backend_name)
compute = backend.compute()
compute.put(__import__("torch").zeros(1))  # start the device before the clock does
base_rss = rss_anon()
read0 = disk_read()
t0 = time.perf_counter()
threading.Thread(target=sample, daemon=True).start()
out = {}
if what == "read":
    buf = bytearray(16 << 20)
    for folder in args:
        for f in sorted(Path(folder).glob("*.safetensors")):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
elif what == "hash":
    from verifier.files import describe_files
    from verifier.model import open_model
    from verifier.parallel import usable_cores
    out = {"threads": usable_cores()}
    for folder in args:
        with open_model(folder) as m:
            describe_files(m.reader.root, m.reader.files)
elif what == "verify":
    import dataclasses
    from verifier.model_cache import ModelCache
    from verifier.verify import VerifyOptions, verify
    cache_dir = options.pop("cache_dir", None)
    cache = None if cache_dir is None else ModelCache(Path(cache_dir))
    report = verify(args[0], args[1], VerifyOptions(**options), compute=compute, cache=cache)
    compute.synchronize()
    out = {"backend": report.environment.backend, "device": report.environment.device,
           "fallbacks": report.environment.fallbacks, "verdict": report.verdict,
           "reason": report.reason, "p": report.p_value, "timings": report.timings,
           "probes": {p.name: p.p_value for p in report.probes},
           "power": {p.name: p.power_p_value for p in report.probes},
           "directions": report.options["hidden_directions"],
           "upcycled": None if report.moe is None else report.moe.upcycled,
           "allocator": allocator,
           "cache": None if cache is None else dataclasses.asdict(cache.counts)}
seconds = time.perf_counter() - t0
if what == "verify" and compute.device.type == "cuda":
    import torch
    out["device_peak"] = torch.cuda.max_memory_allocated()
stop.set()
peak[0] = max(peak[0], rss_anon())
reads.append((seconds, disk_read()))
out["disk_read"] = reads[-1][1] - read0
if what == "verify":
    # the phases run one after another from the start of the clock: each gets what the
    # process read from storage while it ran (the digests' threads read beside them)
    phases, edge, done = {}, 0.0, read0
    names = [k for k in report.timings if k not in ("total", "ranks")]
    for name in names:
        edge += report.timings[name]
        upto = max((b for t, b in reads if t <= edge), default=done)
        phases[name], done = upto - done, upto
    phases[names[-1]] += reads[-1][1] - done  # the report's assembly, after the last phase
    out["disk_read_phases"] = phases
print(json.dumps(out | {"seconds": seconds, "base_rss": base_rss, "peak_rss": peak[0]}))
"""


def fp8_blockwise(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` as float8_e4m3fn values and the float32 scale of each ``block`` x ``block`` block
    (the last ones cut short) that multiplies them back: DeepSeek-V3's storage."""
    import torch

    rows, cols = w.shape
    pad = torch.zeros(-(-rows // block) * block, -(-cols // block) * block)
    pad[:rows, :cols] = w.float()
    tiles = pad.unflatten(0, (-1, block)).unflatten(2, (-1, block))
    scale = tiles.abs().amax(dim=(1, 3)).clamp_min(1e-12) / 448.0
    values = (tiles / scale[:, None, :, None]).flatten(2, 3).flatten(0, 1)[:rows, :cols]
    return values.to(torch.float8_e4m3fn).contiguous(), scale.contiguous()


#: DeepSeek-V3's per-head key sizes (without and with rotary embedding) and value size
LATENT_HEAD = {"qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}


def _attention_spec(p: str, shape: dict[str, int]) -> dict[str, tuple[tuple[int, ...], bool, bool]]:
    """Layer ``p``'s attention tensors: name -> (dims, reads hidden coordinates, writes
    them). Llama's q, k, v and o; with ``shape["q_lora"]``, DeepSeek-V3's latent attention."""
    h, heads = shape["hidden"], shape["heads"]
    if not shape.get("q_lora"):
        hd, kv = h // heads, shape["kv_heads"]
        return {p + "self_attn.q_proj.weight": ((h, h), True, False),
                p + "self_attn.k_proj.weight": ((kv * hd, h), True, False),
                p + "self_attn.v_proj.weight": ((kv * hd, h), True, False),
                p + "self_attn.o_proj.weight": ((h, h), False, True)}
    nope, rope, v = (LATENT_HEAD[k] for k in ("qk_nope_head_dim", "qk_rope_head_dim",
                                               "v_head_dim"))
    q_lora, kv_lora = shape["q_lora"], shape["kv_lora"]
    a = p + "self_attn."
    return {a + "q_a_proj.weight": ((q_lora, h), True, False),
            a + "q_a_layernorm.weight": ((q_lora,), False, False),
            a + "q_b_proj.weight": ((heads * (nope + rope), q_lora), False, False),
            a + "kv_a_proj_with_mqa.weight": ((kv_lora + rope, h), True, False),
            a + "kv_a_layernorm.weight": ((kv_lora,), False, False),
            a + "kv_b_proj.weight": ((heads * (nope + v), kv_lora), False, False),
            a + "o_proj.weight": ((h, heads * v), False, True)}


def build(folder: Path, shape: dict[str, int], seed: int, derive_from: Path | None,
          drift: float, experts: int = 0, turn: bool = False, fp8: bool = False) -> None:
    """Write one checkpoint (one shard for the globals, then one per layer).

    With ``experts``, a Mixtral-style MoE: each layer's FFN becomes ``experts`` experts of width
    ``4 F / experts``; derived from a dense base, they are fine-grained upcycled (four shuffled
    replicas of the base FFN cut into slices, then noise), otherwise drawn fresh. With ``turn``,
    a derived model's hidden space is turned by a Haar rotation instead of a signed
    permutation (readers ``W Q``, writers ``Q^T W``)."""
    import torch
    from safetensors.torch import load_file, save_file

    h, f, vocab, layers = shape["hidden"], shape["ffn"], shape["vocab"], shape["layers"]
    heads, kv = shape["heads"], shape["kv_heads"]
    hd = h // heads
    g = torch.Generator().manual_seed(seed)

    def r(*dims: int) -> torch.Tensor:
        return torch.randn(*dims, generator=g) * 0.02

    if derive_from is not None:
        pi = torch.randperm(h, generator=g)
        sign = torch.where(torch.rand(h, generator=g) < 0.5, -1.0, 1.0)
        if turn:
            q, tri = torch.linalg.qr(torch.randn(h, h, generator=g))
            # Haar: a structured turn (Haar blocks of 256 between two permutations) kept
            # enough of the coordinates for the probes to call it derived
            rot = q * torch.sign(torch.diagonal(tri))

    def out_tensor(w: torch.Tensor, cols: bool, rows: bool) -> torch.Tensor:
        """In a derived model: noise, then the signed hidden permutation on the axes that are
        hidden coordinates (``cols``: input side, ``rows``: output side)."""
        if derive_from is not None:
            w = w + torch.randn(w.shape, generator=g) * (drift * w.norm() / w.numel() ** 0.5)
            if turn:  # readers W T, writers T^T W (gains of one commute with the turn)
                w = w @ rot if cols else rot.T @ w if rows else w
                return w.to(torch.bfloat16).contiguous()
            if cols:
                w = (w * sign)[..., pi]
            if rows:
                w = (w * sign[:, None])[pi] if w.dim() == 2 else (w * sign)[pi]
        return w.to(torch.bfloat16).contiguous()

    folder.mkdir(parents=True, exist_ok=True)
    width = 4 * f // experts if experts else f
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": h,
              "intermediate_size": width, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
              "vocab_size": vocab, "torch_dtype": "bfloat16"}
    if experts:
        config |= {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
                   "num_local_experts": experts, "num_experts_per_tok": 2}
    if shape.get("q_lora"):  # dense MLPs in every layer
        config |= {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
                   "num_key_value_heads": heads, "q_lora_rank": shape["q_lora"],
                   "kv_lora_rank": shape["kv_lora"], "first_k_dense_replace": layers,
                   "n_routed_experts": 256, "rms_norm_eps": 1e-6} | LATENT_HEAD
        del config["head_dim"]
    if fp8:
        config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                         "weight_block_size": [128, 128]}
    (folder / "config.json").write_text(json.dumps(config))
    weight_map: dict[str, str] = {}
    n = layers + 1
    for k in range(n):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        src = load_file(str(derive_from / fname)) if derive_from is not None else None
        if k == 0:
            spec = {"model.embed_tokens.weight": ((vocab, h), True, False),
                    "lm_head.weight": ((vocab, h), True, False),
                    "model.norm.weight": ((h,), False, True)}
        else:
            p = f"model.layers.{k - 1}."
            spec = _attention_spec(p, shape) | {
                p + "input_layernorm.weight": ((h,), False, True),
                p + "post_attention_layernorm.weight": ((h,), False, True)}
            if experts:
                q = p + "block_sparse_moe."
                spec[q + "gate.weight"] = ((experts, h), True, False)
                for e in range(experts):
                    spec |= {f"{q}experts.{e}.w1.weight": ((width, h), True, False),
                             f"{q}experts.{e}.w3.weight": ((width, h), True, False),
                             f"{q}experts.{e}.w2.weight": ((h, width), False, True)}
            else:
                spec |= {p + "mlp.gate_proj.weight": ((f, h), True, False),
                         p + "mlp.up_proj.weight": ((f, h), True, False),
                         p + "mlp.down_proj.weight": ((h, f), False, True)}
        part = {}
        # the base neurons each (expert) slot holds: one shuffled copy of the FFN, or four
        tau = torch.cat([torch.randperm(f, generator=g) for _ in range(4 if experts else 1)])
        for name, (dims, cols, rows) in spec.items():
            if src is not None and ".experts." in name:
                e = int(name.split(".experts.")[1].split(".")[0])
                held = tau[e * width:(e + 1) * width]
                pre = name.split("block_sparse_moe.")[0] + "mlp."
                w = (src[pre + "down_proj.weight"].float()[:, held] if name.endswith("w2.weight")
                     else src[pre + ("gate" if name.endswith("w1.weight") else "up")
                              + "_proj.weight"].float()[held])
            elif src is not None and name in src:
                w = src[name].float()
                if "mlp.gate" in name or "mlp.up" in name:
                    w = w[tau]
                elif "mlp.down" in name:
                    w = w[:, tau]
            elif src is not None:  # a new router
                w = r(*dims)
            elif name.endswith("norm.weight"):
                w = torch.ones(dims)
            else:
                w = r(*dims)
            if name.endswith("norm.weight") and not rows:  # a latent's gain: its own axis
                part[name] = (w if src is not None else torch.ones(dims)).to(torch.bfloat16)
            elif name.endswith("norm.weight"):  # gains of one: unchanged by a signed permutation
                part[name] = torch.ones(dims, dtype=torch.bfloat16)
            elif fp8 and k > 0 and name.endswith(("_proj.weight", "_mqa.weight")):
                part[name], part[name + "_scale_inv"] = fp8_blockwise(out_tensor(w, cols, rows))
            else:
                part[name] = out_tensor(w, cols, rows)
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, fname)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def measure(what: str, backend: str, *paths: Path, options: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, backend, json.dumps(options or {}),
         *map(str, paths)], check=True,
        capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--attention", choices=("standard", "latent"), default="standard",
                        help="latent: DeepSeek-V3's multi-head latent attention")
    parser.add_argument("--q-lora", type=int, default=1536,
                        help="latent attention's query latent width")
    parser.add_argument("--kv-lora", type=int, default=512,
                        help="latent attention's key/value latent width")
    parser.add_argument("--drift", type=float, default=0.3,
                        help="relative noise of the derived candidate")
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: temp dir)")
    parser.add_argument("--pairs", default="derived,independent",
                        help="candidates to verify, comma-separated: derived, independent, "
                        "upcycled, moe-independent")
    parser.add_argument("--experts", type=int, default=64,
                        help="experts per layer of the MoE candidates")
    parser.add_argument("--backend", default="cpu",
                        help="where verify computes: cpu, cuda, npu, fake-npu or auto")
    parser.add_argument("--hidden-sample", type=int, default=None,
                        help="verify's hidden directions (default: verify's own default)")
    parser.add_argument("--full", action="store_true",
                        help="verify --full: every hidden coordinate, every layer pair")
    parser.add_argument("--null-layers", type=int, default=None,
                        help="verify's layers with null draws (default: verify's own default)")
    parser.add_argument("--no-hash", action="store_true",
                        help="verify --no-hash: no sha256 of the files")
    parser.add_argument("--cache", action="store_true",
                        help="also verify each candidate with one cache folder shared by the "
                        "candidates in turn (`lineage verify --cache-dir`): the first fills the "
                        "base's entries (digests, statistics, power check, its side of the null "
                        "draws), later ones reuse them")
    parser.add_argument("--cold", action="store_true",
                        help="drop both checkpoints from the page cache before each measurement "
                        "(the read, the digests and verify then come from the disk)")
    args = parser.parse_args()
    shape = {"hidden": args.hidden, "ffn": args.ffn, "heads": args.heads,
             "kv_heads": args.kv_heads, "vocab": args.vocab, "layers": args.layers}
    if args.attention == "latent":
        shape |= {"q_lora": args.q_lora, "kv_lora": args.kv_lora}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        base = root / "base"
        wanted = args.pairs.split(",")
        cands = {name: root / name for name in wanted}
        seeds = {"derived": 1, "independent": 2, "upcycled": 3, "moe-independent": 4,
                 "rotated": 5, "fp8": 1}
        unknown = set(wanted) - set(seeds)
        if unknown:
            parser.error(f"unknown --pairs {sorted(unknown)}; choose from {sorted(seeds)}")
        if not (base / "config.json").exists():
            build(base, shape, 0, None, 0.0)
        for name, folder in cands.items():
            if not (folder / "config.json").exists():
                build(folder, shape, seeds[name],
                      base if name in ("derived", "upcycled", "rotated", "fp8") else None,
                      args.drift, args.experts if "upcycled" in name or "moe" in name else 0,
                      turn=name == "rotated", fp8=name == "fp8")
        # the largest layer of either checkpoint (a MoE candidate's layers are the larger)
        largest = {name: max(_largest(base), _largest(folder)) for name, folder in cands.items()}
        runs = {}
        for name, cand in cands.items():
            measure("read", "cpu", base, cand)  # warm the page cache
            read = measure("read", "cpu", *_cold(args.cold, base, cand))
            hashed = measure("hash", "cpu", *_cold(args.cold, base, cand))
            options = ({"full": args.full, "digest": not args.no_hash}
                       | ({"hidden_sample": args.hidden_sample} if args.hidden_sample else {})
                       | ({"null_layers": args.null_layers} if args.null_layers else {}))
            runs[name] = measure("verify", args.backend, *_cold(args.cold, base, cand),
                                 options=options) | {
                "read": read["seconds"], "hash": hashed["seconds"],
                "hash_threads": hashed["threads"],
                "bytes": sum(f.stat().st_size for folder in (base, cand)
                             for f in folder.glob("*.safetensors"))}
            if args.cache:
                runs[name]["cached"] = measure(
                    "verify", args.backend, *_cold(args.cold, base, cand),
                    options=options | {"cache_dir": str(Path(tmp) / "cache")})
    mib = 1 << 20
    total = sum(f.stat().st_size for f in base.glob("*.safetensors")) if args.keep else None
    print(f"shape: {json.dumps(shape)}; base checkpoint "
          + (f"{total / mib:.0f} MiB" if total else "in a temporary folder"))
    for name, r in runs.items():
        net = (r["peak_rss"] - r["base_rss"]) / largest[name]
        moe = "" if r["upcycled"] is None else f"; upcycled: {r['upcycled']}"
        print(f"\n{name}: verdict {r['verdict']} (p = {r['p']:.3g}){moe}; probes "
              + ", ".join(f"{k} {v:.3g}" for k, v in r["probes"].items() if v is not None)
              + "; power check " + ", ".join(f"{k} {v:.3g}" for k, v in r["power"].items()
                                            if v is not None)
              + f"; hidden directions compared {r['directions']}")
        print(f"  reason: {r['reason']}")
        print(f"  plain read of both checkpoints ({'cold' if args.cold else 'warm'}) "
              f"{r['read']:.2f} s; their sha256 alone "
              f"{r['hash']:.2f} s ({r['hash_threads']} threads) = {r['hash'] / r['read']:.1f}x the "
              "read; verify"
              + (" --no-hash" if args.no_hash else "") + " "
              f"{r['seconds']:.2f} s = {r['seconds'] / r['read']:.1f}x the read; "
              f"peak RssAnon net {(r['peak_rss'] - r['base_rss']) / mib:.0f} MiB = "
              f"{net:.2f}x the largest layer of the pair ({largest[name] / mib:.0f} MiB; "
              f"interpreter {r['base_rss'] / mib:.0f} MiB)")
        print("  phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["timings"].items()))
        if args.cold:
            print("  read from the disk during each phase: "
                  + ", ".join(f"{k} {v / mib:.0f} MiB" for k, v in r["disk_read_phases"].items())
                  + f"; in all {r['disk_read'] / mib:.0f} MiB = {r['disk_read'] / r['bytes']:.2f}x "
                  "both checkpoints")
        if "cached" in r:
            c = r["cached"]
            n = c["cache"]
            print(f"  with the cache of the runs before: verify {c['seconds']:.2f} s = "
                  f"{c['seconds'] / r['seconds']:.2f}x without it ({c['verdict']}, p = "
                  f"{c['p']:.3g}); file digests {n['file_hits']} reused, {n['files_hashed']} "
                  f"hashed; layer statistics {n['stats_hits']} reused, {n['stats_computed']} "
                  f"computed; power check {n['power_hits']} reused, {n['power_computed']} run; "
                  f"the base's side of the null draws {n['draws_hits']} reused, "
                  f"{n['draws_computed']} computed; peak RssAnon net "
                  f"{(c['peak_rss'] - c['base_rss']) / mib:.0f} MiB = "
                  f"{(c['peak_rss'] - c['base_rss']) / largest[name]:.2f}x the largest layer")
            print("  phases with the cache: "
                  + ", ".join(f"{k} {v:.2f}s" for k, v in c["timings"].items()))
        device = f"{r['backend']} ({r['device']})"
        if "device_peak" in r:
            device += (f"; peak device memory {r['device_peak'] / mib:.0f} MiB = "
                       f"{r['device_peak'] / largest[name]:.2f}x the largest layer")
        print(f"  computed on {device}; CPU fallbacks: {', '.join(r['fallbacks']) or 'none'}; "
              f"allocator {r['allocator']}")


def _cold(cold: bool, *folders: Path) -> tuple[Path, ...]:
    """The folders, their weight files first dropped from the page cache when ``cold``.

    ``POSIX_FADV_DONTNEED`` drops a file's clean pages that no process maps (each measurement
    runs in a fresh process), so the next read comes from the disk; no privileges needed.
    """
    if cold:
        for folder in folders:
            for f in folder.glob("*.safetensors"):
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return folders


def _largest(folder: Path) -> int:
    """Bytes of the checkpoint's largest layer (its shards after the first hold one layer
    each, in bf16)."""
    from safetensors import safe_open

    best = 0
    for f in sorted(folder.glob("*.safetensors"))[1:]:
        with safe_open(str(f), "pt") as fh:
            best = max(best, sum(math.prod(fh.get_slice(k).get_shape()) * 2 for k in fh.keys()))
    return best


if __name__ == "__main__":
    main()
