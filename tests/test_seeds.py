"""Torch random streams of a run (``verifier.seeds``): derived from the run's seed and a stream
key, never the stream that ``torch.manual_seed`` with that seed gives (which initialised many
models), and the same numbers for the same keys."""

from __future__ import annotations

import torch

from verifier.seeds import COPY_NOISE_STREAM, POWER_NOISE_STREAM, torch_generator


def test_a_runs_stream_is_not_torchs_stream_for_the_same_seed():
    for seed in (0, 1, 42):
        torch.manual_seed(seed)
        initialised = torch.randn(1000)
        drawn = torch.randn(1000, generator=torch_generator(seed, POWER_NOISE_STREAM))
        # unrelated streams: correlation of order 1/sqrt(1000), not 1
        assert abs(float(torch.corrcoef(torch.stack([initialised, drawn]))[0, 1])) < 0.15


def test_streams_are_reproducible_and_distinct():
    a = torch.randn(8, generator=torch_generator(3, POWER_NOISE_STREAM))
    assert torch.equal(a, torch.randn(8, generator=torch_generator(3, POWER_NOISE_STREAM)))
    assert not torch.equal(a, torch.randn(8, generator=torch_generator(3, COPY_NOISE_STREAM)))
    assert not torch.equal(a, torch.randn(8, generator=torch_generator(4, POWER_NOISE_STREAM)))
