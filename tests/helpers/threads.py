"""Per-thread counters from /proc, for realtime-safety assertions."""

from __future__ import annotations


def thread_counters(tid: int) -> dict[str, int]:
    """minflt, majflt (from stat) and voluntary/nonvoluntary context switches (from status)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): minflt is field 10, majflt field 12
    out = {"minflt": int(fields[7]), "majflt": int(fields[9])}
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                out[key] = int(value)
    return out
