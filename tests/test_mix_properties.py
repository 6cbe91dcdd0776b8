"""Hypothesis: any set of buffer voices renders to the numpy reference mix."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcore import Engine
from streamcore.voice import pan_gains

N = 32
PERIODS = 12


@st.composite
def voice_specs(draw):
    channels = draw(st.sampled_from([1, 2]))
    frames = draw(st.integers(1, 5 * N))
    return {
        "channels": channels,
        "frames": frames,
        "gain": draw(st.floats(0.0, 2.0, width=32)),
        "pan": draw(st.floats(-1.0, 1.0, width=32)),
        "at": draw(st.integers(0, PERIODS * N)),
        "loop": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def reference(specs, arrays, total):
    out = np.zeros((total, 2), dtype=np.float64)
    for spec, data in zip(specs, arrays, strict=True):
        g = np.float32(pan_gains(spec["gain"], spec["pan"], spec["channels"], 2))
        src = data if spec["channels"] == 2 else data[:, None]
        start = spec["at"]
        if start >= total:
            continue
        length = total - start if spec["loop"] else min(spec["frames"], total - start)
        reps = -(-length // spec["frames"])
        block = np.tile(src, (reps, 1))[:length]
        out[start:start + length] += block.astype(np.float64) * g
    return out


class TestReferenceMix:
    """The native mix equals a float64 numpy reference within float32 rounding."""

    @settings(max_examples=60, deadline=None)
    @given(st.lists(voice_specs(), min_size=1, max_size=12))
    def test_matches_reference(self, specs):
        arrays = []
        for spec in specs:
            rng = np.random.default_rng(spec["seed"])
            shape = (spec["frames"], 2) if spec["channels"] == 2 else (spec["frames"],)
            arrays.append((rng.standard_normal(shape) * 0.3).astype(np.float32))
        with Engine(sink="manual", blocksize=N) as e:
            for spec, data in zip(specs, arrays, strict=True):
                e.play(data, gain=spec["gain"], pan=spec["pan"], at=spec["at"],
                       loop=spec["loop"])
            out = e.render(PERIODS)
        expected = reference(specs, arrays, PERIODS * N)
        # float32 sums of up to 12 terms: a few ulps of the largest magnitude involved
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * scale)
