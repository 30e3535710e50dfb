"""The soak's measurements and its verdict: samples of one gateway process and the rule for "flat".

See ``load_tests/soak.py`` for the run and the reasons behind the bounds below.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path

RSS_SLACK_MB, RSS_SLACK_PCT = 8.0, 0.10
KEYS_SLACK, KEYS_SLACK_PCT = 20, 0.10
FD_SLACK = 8


# --- samples -----------------------------------------------------------------------------------

@dataclass
class Sample:
    """One look at the gateway: seconds since the mix started, RSS, open fds, store keys."""

    t: float
    rss_mb: float
    fds: int
    keys: int
    sessions_closed: int
    by_table: dict[str, int] = field(default_factory=dict)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sqlite_keys(path: Path) -> dict[str, int]:
    """Rows of each table of the gateway's SQLite store (read-only connection; WAL lets it read)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
    finally:
        con.close()


def redis_keys(url: str) -> dict[str, int]:
    """Redis ``DBSIZE``, and the keys per prefix (the part before the first ``:`` after ``triplock:``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        by_prefix: dict[str, int] = {}
        for key in client.scan_iter(count=1000):
            name = key.decode(errors="replace").removeprefix("triplock:").split(":", 1)[0]
            by_prefix[name] = by_prefix.get(name, 0) + 1
        return {"DBSIZE": int(client.dbsize()), **by_prefix}
    finally:
        client.close()


def key_total(keys: dict[str, int]) -> int:
    return keys["DBSIZE"] if "DBSIZE" in keys else sum(keys.values())


# --- verdict -----------------------------------------------------------------------------------

@dataclass
class Verdict:
    flat: bool
    reasons: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _thirds(values: list[float]) -> tuple[list[float], list[float]]:
    k = max(1, len(values) // 3)
    return values[:k], values[-k:]


def verdict(samples: list[Sample], duration: float) -> Verdict:
    """Flat or not, by the rule in the module docstring (warm-up: the first fifth, >= 2 samples)."""
    steady = [s for s in samples if s.t >= duration / 5][1:] if samples else []
    if len(steady) < 3:
        return Verdict(False, [f"only {len(steady)} samples after warm-up (need 3): run longer"])
    out = Verdict(True)

    def check(name: str, first: float, last: float, allowed: float, unit: str) -> None:
        ok = last - first <= allowed
        out.lines.append(f"{name}: first third {first:.1f}{unit}, last third {last:.1f}{unit}, growth "
                         f"{last - first:+.1f}{unit} (allowed +{allowed:.1f}{unit}): {'flat' if ok else 'GROWS'}")
        if not ok:
            out.flat = False
            out.reasons.append(f"{name} grew {last - first:+.1f}{unit}")

    a, b = _thirds([s.rss_mb for s in steady])
    first = statistics.median(a)
    check("RSS (median)", first, statistics.median(b), max(RSS_SLACK_MB, RSS_SLACK_PCT * first), " MB")
    a, b = _thirds([float(s.keys) for s in steady])
    first = statistics.median(a)
    check("store keys (median)", first, statistics.median(b), max(KEYS_SLACK, KEYS_SLACK_PCT * first), "")
    a, b = _thirds([float(s.fds) for s in steady])
    check("open fds (max)", max(a), max(b), FD_SLACK, "")
    return out
