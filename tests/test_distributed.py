"""Layers sharded over two gloo ranks give the single-process report (timings aside), for a
test pair of each kind, digests included (the ranks deal the files out), and the CLI launched by
torchrun writes one report from rank 0."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from parity import ONE_OF_EACH_KIND

from backends.distributed import Shards
from verifier.report import Report

ROOT = Path(__file__).resolve().parents[1]
#: fields allowed to differ between world sizes
VOLATILE = {"created", "timings"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], ranks: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500,
                          cwd=ROOT)


def test_shards_deal_layers_round_robin_and_cover_them_once():
    layers = list(range(7))
    parts = [Shards(rank=r, world=3).mine(layers) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for p in parts for x in p) == layers
    assert Shards().mine(layers) == layers
    assert Shards().gather("x") == ["x"]


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_report_for_each_kind_of_pair(
        zoo, zoo_root, tmp_path):
    for pair in ONE_OF_EACH_KIND:  # build every model first, outside the ranks
        zoo[pair.base], zoo[pair.candidate]
    # both runs in the same environment (one BLAS thread per process: the thread count
    # changes float32 summation order, which is not what this test is about)
    for ranks in (1, 2):
        done = _torchrun([str(ROOT / "tests" / "dist_verify.py"), str(zoo_root),
                          str(tmp_path / str(ranks)), *[p.name for p in ONE_OF_EACH_KIND]], ranks)
        assert done.returncode == 0, done.stderr[-4000:]
    for pair in ONE_OF_EACH_KIND:
        single = Report.from_json((tmp_path / "1" / f"{pair.name}.json").read_text())
        sharded = Report.from_json((tmp_path / "2" / f"{pair.name}.json").read_text())
        assert "ranks" not in single.timings
        assert sharded.timings.get("ranks") == 2.0
        assert sharded.verdict == pair.truth
        assert all(len(f.sha256) == 64 for f in sharded.models.candidate.files)
        assert sharded.model_dump(exclude=VOLATILE) == single.model_dump(exclude=VOLATILE), \
            pair.name


@pytest.mark.slow
def test_torchrun_cli_writes_one_report_from_rank_zero(zoo, tmp_path):
    out = tmp_path / "report.json"
    # on a frame of 32 of the 64 hidden directions: the wide models' path, sharded
    done = _torchrun(["-m", "verifier", "verify", str(zoo["llama"]), str(zoo["llama_pruned"]),
                      "--backend", "cpu", "--no-hash", "--format", "json", "--output", str(out),
                      "--expect", "derived", "--hidden-sample", "32"])
    assert done.returncode == 0, done.stderr[-4000:]
    # one rank printed the report: exactly one JSON document on stdout
    printed = json.loads(done.stdout)
    written = json.loads(out.read_text())
    assert printed["verdict"] == written["verdict"] == "derived"
    assert written["timings"]["ranks"] == 2.0
    assert written["options"]["hidden_directions"] == 32


@pytest.mark.parametrize("env", [
    {"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "0"}, {"WORLD_SIZE": "abc"},
    {"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29632"},
], ids=str)
def test_a_launch_environment_half_set_or_out_of_range_is_a_usage_error(env, monkeypatch):
    # it was a bare int() traceback (exit 70), or a wait for peers that never come
    from backends.distributed import join
    from verifier.errors import UsageError

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError):
        join("gloo")


def test_ranks_given_other_arguments_are_refused_alike(monkeypatch):
    # a rank with another --seed gave a report that mixed two runs; --probes, a crash
    from backends.distributed import Shards
    from verifier.errors import UsageError

    shards = Shards(rank=0, world=3)
    monkeypatch.setattr(shards, "gather", lambda value: [value, value, value + "x"])
    with pytest.raises(UsageError, match="rank 2 was given other arguments"):
        shards.require_same("arguments", "same")
    monkeypatch.setattr(shards, "gather", lambda value: [value] * 3)
    shards.require_same("arguments", "same")
    Shards().require_same("arguments", "anything")  # a lone process has nobody to differ from
