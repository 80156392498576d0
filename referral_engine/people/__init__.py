"""People: matching a referral's subject against known people, and merging duplicates."""

from referral_engine.people.matching import find_or_create, normalise, phonetic
from referral_engine.people.merges import Merges

__all__ = ["Merges", "find_or_create", "normalise", "phonetic"]
