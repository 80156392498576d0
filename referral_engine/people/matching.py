"""Matching a referral's subject against the people already known.

Safeguarding reviews keep finding the same failure: a child known to three agencies
under three spellings. So every subject is normalised (case, accents, punctuation,
hyphens) and compared with known people of the same date of birth: the same family
name and a first name that is the same, a known short form, or a close spelling is the
same person; a family name that sounds the same is shown to staff as a possible match,
never merged silently.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

import jellyfish
import sqlalchemy as sa
from sqlmodel import Session

from referral_engine.storage.models import Person

# Common English short forms; each group names one person. Extend freely.
NAME_VARIANTS = [
    {"alexander", "alex", "alec", "sandy"},
    {"alexandra", "alex", "lexi", "sandra"},
    {"anthony", "tony", "ant"},
    {"benjamin", "ben", "benny"},
    {"catherine", "katherine", "kathryn", "kate", "katie", "cathy", "kath"},
    {"charles", "charlie", "chas"},
    {"christopher", "chris", "kit"},
    {"daniel", "dan", "danny"},
    {"david", "dave", "davey"},
    {"edward", "ed", "eddie", "ted", "ned"},
    {"elizabeth", "liz", "lizzie", "beth", "betty", "eliza", "libby"},
    {"james", "jim", "jimmy", "jamie"},
    {"jennifer", "jen", "jenny"},
    {"jonathan", "jon", "jonny"},
    {"joseph", "joe", "joey"},
    {"joanne", "jo", "joanna"},
    {"margaret", "maggie", "meg", "peggy"},
    {"matthew", "matt"},
    {"michael", "mike", "mikey", "mick"},
    {"nicholas", "nick", "nicky"},
    {"patricia", "pat", "patsy", "trish"},
    {"rebecca", "becky", "becca"},
    {"richard", "rich", "rick", "ricky", "dick"},
    {"robert", "rob", "robbie", "bob", "bobby", "bert"},
    {"samuel", "sam", "sammy"},
    {"samantha", "sam", "sammy"},
    {"stephen", "steven", "steve"},
    {"thomas", "tom", "tommy"},
    {"victoria", "vicky", "tori"},
    {"william", "will", "bill", "billy", "liam"},
]
_VARIANTS: dict[str, set[str]] = {}
for _group in NAME_VARIANTS:
    for _name in _group:
        _VARIANTS.setdefault(_name, set()).update(_group)


def normalise(name: str | None) -> str:
    """'  O'Brien-Smith ' -> 'obriensmith'; 'Zoë' -> 'zoe'."""
    if not name:
        return ""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", plain.lower())


def phonetic(name: str | None) -> str:
    key = normalise(name)
    return jellyfish.metaphone(key)[:60] if key else ""


def same_given_name(a: str, b: str) -> bool:
    if not a or not b:
        return False
    if a == b or b in _VARIANTS.get(a, ()):
        return True
    return jellyfish.jaro_winkler_similarity(a, b) >= 0.92


@dataclass(frozen=True)
class Match:
    person_id: int | None  # None: not identified yet (see pathways' `identify`)
    matched: bool  # True: an existing person; False: created now
    possible: tuple[int, ...]  # other people who might be the same, for staff to check


def find_or_create(
    session: Session,
    *,
    given_name: str | None,
    family_name: str | None,
    date_of_birth: date | None,
    estimated_age: int | None = None,
    gender: str | None = None,
) -> Match:
    given, family = normalise(given_name), normalise(family_name)
    sound = phonetic(family_name)
    strong: list[int] = []
    possible: list[int] = []
    merged: dict[int, int | None] = {}  # candidate -> the record it was merged into
    if date_of_birth is not None:
        rows = session.execute(
            sa.select(Person.id, Person.given_key, Person.family_key, Person.family_phonetic,
                      Person.merged_into_id)
            .where(Person.date_of_birth == date_of_birth)
            .order_by(Person.id)
        ).all()  # fmt: skip
        merged = {r[0]: r[4] for r in rows}
        for pid, p_given, p_family, p_sound, _ in rows:
            if p_family == family and same_given_name(given, p_given or ""):
                strong.append(pid)
            elif (p_sound and p_sound == sound) or (
                p_family and jellyfish.jaro_winkler_similarity(family, p_family) >= 0.88
            ):
                possible.append(pid)
    elif given and family:
        rows = session.execute(
            sa.select(Person.id, Person.merged_into_id)
            .where(Person.family_key == family, Person.given_key == given)
            .order_by(Person.id)
            .limit(20)
        ).all()
        merged = {r[0]: r[1] for r in rows}
        possible = list(merged)

    def surviving(pid: int) -> int:
        # Only a record merged into another needs following (a query a step).
        return pid if merged.get(pid, pid) is None else _surviving(session, pid)

    # A record merged into another stands for the one it was merged into.
    strong = list(dict.fromkeys(surviving(pid) for pid in strong))
    possible = [p for p in dict.fromkeys(surviving(pid) for pid in possible)
                if p not in strong]  # fmt: skip
    if len(strong) == 1:
        return Match(strong[0], True, tuple(possible))
    person = Person(
        given_name=given_name,
        family_name=family_name,
        given_key=given or None,
        family_key=family or None,
        family_phonetic=sound or None,
        date_of_birth=date_of_birth,
        estimated_age=estimated_age,
        gender=gender,
    )
    session.add(person)
    session.flush()
    assert person.id is not None
    # Two or more strong candidates: do not guess between them; staff decide.
    return Match(person.id, False, tuple(strong + possible))


def _surviving(session: Session, person_id: int) -> int:
    """Follow merges to the record a person now lives on."""
    seen = {person_id}
    while True:
        into = session.execute(
            sa.select(Person.merged_into_id).where(Person.id == person_id)
        ).scalar_one_or_none()
        if into is None or into in seen:
            return person_id
        seen.add(into)
        person_id = into
