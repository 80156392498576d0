"""Audit actions are a closed vocabulary: free text never enters the audit log.

An action names what was asked for as `source:subject:action` (DESIGN.md). Where the
last part would come from what a caller typed (an event name that no pathway has, a
username that no account has), the row says `unknown_event` or `unknown` instead and
keeps a keyed hash (HMAC under the audit key) of what was typed: an auditor holding the
key can check whether a given text was the one asked for, yet the log, which retention
cannot erase, never holds a name, an address or a password typed into the wrong box.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Container
from typing import Any

UNKNOWN_EVENT = "unknown_event"


def keyed_hash(key: bytes, text: str) -> str:
    """HMAC-SHA-256 of the text under the audit key, hex. A lone surrogate (which JSON
    can carry but UTF-8 cannot) is hashed as its code point, never refused."""
    data = text.encode("utf-8", "surrogatepass")
    return hmac.new(key, b"typed:" + data, hashlib.sha256).hexdigest()


def event_action(
    key: bytes, source: str, event: Any, known: Container[str]
) -> tuple[str, dict[str, str]]:
    """The audit action and summary for asking to fire `event`: its own name when a
    pathway has that event, otherwise `unknown_event` and the keyed hash of what was asked."""
    if isinstance(event, str) and event in known:
        return f"{source}:case:{event}", {"event": event}
    return f"{source}:case:{UNKNOWN_EVENT}", {"event_hmac": keyed_hash(key, str(event))}


def unknown_username(key: bytes, typed: str) -> str:
    """What a sign-in audit row says for a username no account has."""
    return f"unknown:{keyed_hash(key, typed)[:32]}"
