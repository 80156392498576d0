"""Signed heads: the chain's position and hash, kept where the database cannot reach.

A head is one JSON line `{"seq": N, "hash": "<hex>", "at": "<ISO>", "mac": "<hex>"}`:
the chain had N links and its head hash was `hash` at time `at`, and `mac` (HMAC under
the audit key) says the application said so. A partnership appends heads to a file the
database administrator cannot change (`REFERRAL_ENGINE_AUDIT_HEAD_LOG`, on another host,
WORM storage, or mailed out), and `audit verify --head FILE` checks the chain against
the last one: a chain cut short of it, or different from it at its position, fails, even
if whoever changed it also dropped the triggers and the checkpoints. (DESIGN.md: as
Certificate Transparency does with signed tree heads.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referral_engine.errors import DomainError


class HeadFileError(DomainError):
    """A file of kept heads that cannot be read as one (named by line)."""

    status = 422


def head_mac(key: bytes, seq: int, hash_hex: str, at: str) -> str:
    return hmac.new(key, f"head:{seq}:{hash_hex}:{at}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    at: str
    mac: str

    @classmethod
    def sign(cls, key: bytes, seq: int, head: bytes, at: str) -> Head:
        return cls(seq, head.hex(), at, head_mac(key, seq, head.hex(), at))

    def genuine(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, head_mac(key, self.seq, self.hash, self.at))

    def line(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at, "mac": self.mac})

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "at": self.at, "mac": self.mac}


def parse_head(text: str, where: str = "head") -> Head:
    """One head from its JSON line; the error names what is wrong with it."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise HeadFileError(f"{where} is not a JSON line") from None
    if not isinstance(doc, dict):
        raise HeadFileError(f"{where} is not a JSON object")
    seq, hash_hex, at, mac = (doc.get(k) for k in ("seq", "hash", "at", "mac"))
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise HeadFileError(f"{where}: seq must be a whole number of links, 0 or more")
    for name, value in (("hash", hash_hex), ("mac", mac)):
        if not isinstance(value, str) or len(value) != 64:
            raise HeadFileError(f"{where}: {name} must be 64 hexadecimal digits")
        try:
            bytes.fromhex(value)
        except ValueError:
            raise HeadFileError(f"{where}: {name} must be 64 hexadecimal digits") from None
    if not isinstance(at, str):
        raise HeadFileError(f"{where}: at must be an ISO date-time")
    return Head(seq, hash_hex, at, mac)


def read_kept(path: str | os.PathLike[str]) -> Head:
    """The last head in a file of kept heads (the last one counts; blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HeadFileError(f"cannot read the head file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise HeadFileError(f"the head file {path} is not UTF-8 text") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise HeadFileError(f"the head file {path} holds no head")
    n, line = numbered[-1]
    return parse_head(line, f"{path} line {n}")


def append_head(path: str | os.PathLike[str], head: Head) -> None:
    """Append one head line and flush it to disk before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (head.line() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
