"""How a page addresses the person signed in: by their name, not their title or team.

Display names are written as a partnership writes them: "Dr Ayo Mensah (Riverside
Surgery)", "PC Dana Reed", "Sgt Casey Ford (IOM)", and, for a shared account, "Internal
Audit". A greeting uses the given name ("Ayo", "Dana", "Casey"); a name with no given
name in it (a team's account) is used whole.
"""

from __future__ import annotations

import re

# Titles and ranks that come before a name (police ranks as forces abbreviate them).
TITLES = frozenset(
    ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "rev", "sir", "dame",
     "pc", "psc", "pcso", "dc", "sgt", "ds", "insp", "di", "ci", "dci", "supt", "cllr")
)  # fmt: skip
# Words that say a display name is a team's or a role's, not a person's.
TEAM_WORDS = frozenset(
    ("audit", "administrator", "admin", "team", "service", "desk", "unit", "office", "hub",
     "department", "council", "support", "system")
)  # fmt: skip


def without_aside(display_name: str) -> str:
    """The name without a trailing aside in brackets ('Sam Patel (Northgate Academy)')."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", display_name).strip() or display_name.strip()


def greeting_name(display_name: str) -> str:
    """The name to greet someone by: 'Dr Ayo Mensah (Riverside Surgery)' -> 'Ayo'."""
    words = without_aside(display_name).split()
    while len(words) > 1 and words[0].lower().rstrip(".") in TITLES:
        words = words[1:]
    if not words:
        return display_name.strip()
    if any(w.lower() in TEAM_WORDS for w in words):
        return " ".join(words)
    return words[0]


def header_name(display_name: str, agency: str | None) -> str:
    """Who is signed in, for the page header, naming the agency once: 'Sam Patel
    (Northgate Academy)' and agency 'Northgate Academy' is 'Sam Patel · Northgate
    Academy', not the agency twice."""
    name = display_name.strip()
    if not agency:
        return name
    if agency.lower() in name.lower():
        bare = without_aside(name)
        if agency.lower() in bare.lower():
            return bare
        return f"{bare} · {agency}"
    return f"{name} · {agency}"
