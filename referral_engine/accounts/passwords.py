"""Password hashing (argon2id through passlib, maintained as `libpass`) and rules.

"argon2-fast" keeps the argon2id scheme with the smallest cost, for tests only: the
suite signs in thousands of times and 120 ms a hash would make it crawl.
"""

from __future__ import annotations

import gzip
import re
import string
from functools import lru_cache
from importlib.resources import files

from passlib.context import CryptContext

from referral_engine.errors import FieldError, InvalidData


@lru_cache
def context(hasher: str) -> CryptContext:
    if hasher == "argon2":
        return CryptContext(schemes=["argon2"], argon2__type="ID")
    if hasher == "argon2-fast":
        return CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__rounds=1,
            argon2__memory_cost=8,
            argon2__parallelism=1,
        )
    raise ValueError(f"unknown password hasher {hasher!r}")


# The stored hash of an account whose password its owner has not set yet (or that was
# reset): no password verifies against it.
UNUSABLE = "!unset"
# The longest password accepted (ASVS asks for at least 64 to be allowed). Longer ones are
# refused with a clear error before hashing; passlib itself fails over 4,096 bytes.
MAX_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control(text: str) -> bool:
    """Whether `text` holds a control character (CR, LF, tab, NUL, ...)."""
    return bool(_CONTROL.search(text))


def hash_password(password: str, hasher: str) -> str:
    return context(hasher).hash(password)


def verify_password(password: str, hashed: str, hasher: str) -> bool:
    if hashed == UNUSABLE:  # as slow as a wrong password, so it reveals nothing
        context(hasher).verify(password, dummy_hash(hasher))
        return False
    try:
        return context(hasher).verify(password, hashed)
    except (ValueError, TypeError):
        return False


# A real hash to verify against when the username does not exist, so that a wrong
# username costs as long as a wrong password and does not reveal which accounts exist.
@lru_cache
def dummy_hash(hasher: str) -> str:
    return hash_password("no such user, constant-time padding", hasher)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (data/common-passwords.LICENSE says whence),
    read once from the package: nothing is fetched at run time."""
    raw = (files("referral_engine.accounts") / "data" / "common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(raw).decode().split())


def is_common(password: str) -> bool:
    """On the list as typed, without spaces, or once digits and symbols added at the end
    are taken off ("Summer2026!" is "summer")."""
    folded = password.casefold()
    stem = folded.rstrip(string.digits + string.punctuation + " ")
    candidates = {folded, folded.replace(" ", ""), stem} - {""}
    return any(c in common_passwords() for c in candidates)


def check_password_rules(password: str, username: str, min_length: int) -> None:
    """The rules a password must meet, each refusal naming the field and the reason."""
    if len(password) > MAX_LENGTH:
        raise InvalidData(FieldError("password", f"must be at most {MAX_LENGTH} characters"))
    if len(password) < min_length:
        raise InvalidData(FieldError("password", f"must be at least {min_length} characters"))
    if username and username.casefold() in password.casefold():
        raise InvalidData(FieldError("password", "must not contain the username"))
    if len(set(password.casefold())) < 4:
        raise InvalidData(
            FieldError("password", "uses too few different characters: try a phrase of words")
        )
    if is_common(password):
        raise InvalidData(
            FieldError("password", "is one of the most common passwords, which attackers "
                       "try first: choose another")
        )  # fmt: skip
