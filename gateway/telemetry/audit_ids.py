"""Audit event ids: unique across processes, increasing within one, cheap to make."""

from __future__ import annotations

import os
import random

_HEX2 = tuple(f"{i:02x}" for i in range(256))


class EventIds:
    """Unique, time-ordered ids: 48-bit milliseconds then 80 bits, random per ms and incremented within it.

    The random part only has to make ids from different processes distinct (they are not
    secrets), so it comes from a generator seeded once from the OS: reading ``os.urandom``
    every millisecond was a system call on most records under load. Its first 72 bits change
    only every 256 ids, so they are formatted with the millisecond and the last 8 come from
    a table (formatting all 80 bits per record was ~0.5 µs).
    """

    def __init__(self) -> None:
        self._ms = 0
        self._high = 0  # the first 72 of the 80 bits
        self._low = 0  # the last 8
        self._prefix = ""  # "evt_", the milliseconds and _high, in hex
        self._random = random.Random(os.urandom(16))

    def start_after(self, event_id: str) -> None:
        """Make every later id greater than ``event_id`` (the last record of the chain this process
        continues): a restart within the previous process's last millisecond stays ordered."""
        try:
            ms, high, low = int(event_id[4:16], 16), int(event_id[16:34], 16), int(event_id[34:36], 16)
        except ValueError:
            return  # not one of ours: the verifier will say so; nothing to continue from
        if len(event_id) != 36 or not event_id.startswith("evt_") or (ms, high, low) <= (self._ms, self._high,
                                                                                          self._low):
            return
        self._ms, self._high, self._low = ms, high, low
        self._prefix = f"evt_{ms:012x}{high:018x}"
        # the next id in this millisecond increments from here; a later millisecond starts afresh (greater)

    def next(self, ms: int) -> str:
        """The next id for a record stamped at ``ms`` (milliseconds since the epoch)."""
        if ms > self._ms:
            rand = self._random.getrandbits(79)  # one bit of headroom for increments
            self._ms, self._high, self._low = ms, rand >> 8, rand & 0xFF
            self._prefix = f"evt_{ms:012x}{self._high:018x}"
        elif self._low < 0xFF:  # same millisecond (or the clock stepped back): stay ordered
            self._low += 1
        else:
            self._high, self._low = self._high + 1, 0
            self._prefix = f"evt_{self._ms:012x}{self._high:018x}"
        return self._prefix + _HEX2[self._low]


__all__ = ["EventIds"]
