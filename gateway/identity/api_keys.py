"""Triplock API keys: generated once, shown once, stored only as hashes in a small JSON file.

A key reads ``tlk_<id>_<secret>``: the public ``id`` finds the record without scanning, and the
SHA-256 of the whole key is compared in constant time. SHA-256 (not a slow password hash) is
right here because the secret is 256 random bits, not something a person chose: there is
nothing to brute-force, and the hot path stays at one hash per request.

The file is rewritten atomically (temp file + rename, mode 0600) under an exclusive lock, so
``triplock keys revoke`` run next to a live gateway never leaves a half-written file; the
gateway notices the new file by its modification time
(see :class:`gateway.identity.authenticators.ApiKeyAuthenticator`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

KEY_PREFIX = "tlk_"
_KEY_RE = re.compile(r"^tlk_([a-z0-9]{12})_([A-Za-z0-9_-]{32,128})$")
_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_FORMAT_VERSION = 1


def parse_key(token: str) -> str | None:
    """The key id of a well-formed API key, else None (then it is not an API key at all)."""
    m = _KEY_RE.match(token)
    return m.group(1) if m else None


def hash_key(token: str) -> str:
    """What is stored in place of the key."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def key_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(token).encode(), stored_hash.encode())


def check_name(kind: str, value: str) -> str:
    """Principal, agent and group names: printable, no spaces, so they are safe in ids and logs."""
    if not _ID_RE.match(value):
        raise ValueError(f"{kind} {value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return value


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One API key as stored: who it authenticates, never the key itself."""

    id: str
    principal: str
    agent: str
    groups: tuple[str, ...]
    hash: str
    created_at: float
    description: str = ""
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """The record without its hash: what ``keys list`` prints."""
        out = asdict(self)
        out.pop("hash")
        out["groups"] = list(self.groups)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApiKeyRecord:
        revoked = data.get("revoked_at")
        return cls(
            id=str(data["id"]), principal=str(data["principal"]), agent=str(data.get("agent") or data["principal"]),
            groups=tuple(str(g) for g in data.get("groups") or ()), hash=str(data["hash"]),
            created_at=float(data["created_at"]), description=str(data.get("description") or ""),
            revoked_at=None if revoked is None else float(revoked),
        )


class KeyStore:
    """The JSON file of API key records."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def signature(self) -> tuple[int, int] | None:
        """(mtime_ns, size) of the file, or None when absent: cheap change detection."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def load(self) -> dict[str, ApiKeyRecord]:
        """All records by key id ({} when the file does not exist yet)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        if not isinstance(raw, dict) or raw.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{self.path}: not a Triplock key file (version {_FORMAT_VERSION})")
        records = [ApiKeyRecord.from_dict(r) for r in raw.get("keys") or []]
        return {r.id: r for r in records}

    def create(self, principal: str, groups: tuple[str, ...] = (), agent: str | None = None,
               description: str = "") -> tuple[str, ApiKeyRecord]:
        """A new key for ``principal``: returns (the key, shown only now; its stored record)."""
        check_name("principal", principal)
        for g in groups:
            check_name("group", g)
        if agent is not None:
            check_name("agent", agent)
        key_id = secrets.token_hex(6)  # 48 bits: unique, not secret
        token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKeyRecord(id=key_id, principal=principal, agent=agent or principal, groups=tuple(groups),
                              hash=hash_key(token), created_at=time.time(), description=description)
        with self._locked() as records:
            if key_id in records:  # 1 in 2^48 per existing key; refuse rather than overwrite
                raise RuntimeError("key id collision; run the command again")
            records[key_id] = record
        return token, record

    def list(self) -> list[ApiKeyRecord]:
        """Every record, oldest first."""
        return sorted(self.load().values(), key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Mark a key revoked (kept for the audit trail); None when there is no such key."""
        with self._locked() as records:
            record = records.get(key_id)
            if record is None:
                return None
            if record.active:
                record = records[key_id] = replace(record, revoked_at=time.time())
            return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKeyRecord]]:
        """Read-modify-write under an exclusive lock; the caller mutates the dict it is given."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.load()
            yield records
            self._write(records)

    def _write(self, records: dict[str, ApiKeyRecord]) -> None:
        doc = {"version": _FORMAT_VERSION, "keys": [asdict(r) for r in records.values()]}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)  # hashes are not keys, but nobody else needs to read them
                json.dump(doc, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
