"""Comparing what a recorder captured with what was played, frame by frame."""

from __future__ import annotations

import itertools

import numpy as np


def pieces(recording: np.ndarray, tone: np.ndarray) -> list[list[int]]:
    """Walk ``recording`` from the tone's first frame: [tone index, frames] for each piece
    that equals the tone bit for bit, [-1, frames] for each run of silence between them,
    [-2, 1] for a sample that is neither."""
    starts = np.flatnonzero(recording[:, 0] == tone[0, 0])
    if not starts.size:
        return []
    segment, position, found = recording[starts[0]:], 0, []
    expected = 0  # where the tone would continue
    while position < len(segment) and len(found) < 256:
        if segment[position, 0] == 0:
            silent = np.flatnonzero(segment[position:, 0] != 0)
            frames = int(silent[0]) if silent.size else len(segment) - position
            found.append([-1, frames])
            position += frames
            continue
        # a sample value may occur more than once in the tone: the continuation first,
        # else the candidate that matches longest
        candidates = np.flatnonzero(tone[:, 0] == segment[position, 0])
        best_at, best = -1, 0
        for at in ([expected] if expected in candidates else []) + list(candidates[:8]):
            size = min(len(segment) - position, len(tone) - int(at))
            same = (segment[position:position + size] == tone[at:at + size]).all(axis=1)
            frames = size if same.all() else int(np.argmin(same))
            if frames > best:
                best_at, best = int(at), frames
            if at == expected and frames > 0:
                break
        if best == 0:  # a sample that is not the tone's (nor silence)
            found.append([-2, 1])
            position += 1
            continue
        found.append([best_at, best])
        position += best
        expected = best_at + best
    return found


def channel_pieces(recording: np.ndarray, tone: np.ndarray) -> list[list[list[int]]]:
    """:func:`pieces` for each channel alone (a JACK server that xruns may even record one
    port a period behind the other: the dummy server at 64 frames did)."""
    return [pieces(recording[:, [c]], tone[:, [c]]) for c in range(tone.shape[1])]


def judge_noisy(pieces_found: list[list[int]], frames: int, server_xruns: int,
                period: int) -> list[str]:
    """What is wrong with a recording made while the server xran ``server_xruns`` times
    (period ``period``).  At a server xrun a JACK recorder may miss periods or read one
    twice (the dummy server at 64 frames: one period dropped, the next recorded twice; a
    late cycle skipped three), so each xrun may break the tone twice, each break a jump of
    at most eight periods, with no more than four periods per xrun missing in all; samples
    that are not the tone's, or a recording out of order beyond that, are wrong.  An empty
    list: nothing wrong."""
    problems = []
    if any(at == -2 for at, _ in pieces_found):
        problems.append("samples that are neither the tone's nor silence")
    heard = [(at, n) for at, n in pieces_found if at >= 0]
    breaks = list(itertools.pairwise(heard))
    if len(breaks) > 2 * server_xruns:
        problems.append(f"{len(breaks)} breaks for {server_xruns} server xruns")
    for (at, n), (next_at, _) in breaks:
        if abs(next_at - (at + n)) > 8 * period:
            problems.append(f"a jump of {next_at - (at + n)} frames at tone frame {at + n}")
    missing = frames - len({f for at, n in heard for f in range(at, at + n)})
    if missing > 4 * period * server_xruns:
        problems.append(f"{missing} frames missing for {server_xruns} server xruns")
    return problems
