"""The two structural rules (DESIGN.md), read from the source: who writes case and person
rows, and who queries them.

Pure: this parses the code (the standard library's `ast`), it runs none of it. A module
that writes a case or person table (an INSERT, UPDATE or DELETE through SQLAlchemy or on its
`__table__`, a new row such as `Person(...)`, or an assignment to a column only those tables
have, `person.given_name = ...`) or queries one (`select`, `get`) must be
listed below with the reason it may. A new module that does either fails here, naming the
file and line: the next feature (notes, documents, tasks, search) cannot go around the
store and the restricted query without someone changing this file on purpose.

`STILL_TO_MOVE` is the work left (issue 16): modules that still write or read these
tables themselves. The test also fails when one of them no longer does, so the list only
ever shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

from referral_engine.settings import PROJECT_ROOT

# The tables that describe a case or a person (DESIGN.md "One writer").
CASE_TABLES = {"Case", "CaseHistory", "Deadline", "Person", "PersonMerge", "Referral"}

# Modules that may write them, and why.
WRITERS = {
    "referral_engine/engine/engine.py": "Engine.fire: the one path for pathway events",
    "referral_engine/engine/intake.py": "opening a case (Engine.fire's effects and referrals)",
    "referral_engine/store/changes.py": "recorded changes that are not events (merges, undo)",
}

# Modules that may query them, and why.
READERS = {
    "referral_engine/engine/engine.py": "the case a fire changes",
    "referral_engine/engine/intake.py": "matching and repeats at intake",
    "referral_engine/store/changes.py": "the row a recorded change changes",
    "referral_engine/access/rules.py": "the restricted query itself (visible_cases)",
    "referral_engine/casework/cases.py": "case, queue and person reads through visible_cases",
    "referral_engine/audit/log.py": "verify: every case-history row has its audit row",
}

# Still writing or reading for themselves: to move behind the store and the restricted
# query. {module: "writes" / "reads" / "writes and reads"}.
STILL_TO_MOVE = {
    "referral_engine/ops/retention.py": "writes and reads",
    "referral_engine/ops/scheduler.py": "writes and reads",
    "referral_engine/ops/demo.py": "writes and reads",
    "referral_engine/people/merges.py": "writes and reads",
    "referral_engine/ops/sar.py": "reads",
    "referral_engine/casework/meetings.py": "reads",
    "referral_engine/casework/breakglass.py": "reads",
    "referral_engine/reports/kpis.py": "reads",
    "referral_engine/reports/exports.py": "reads",
    "referral_engine/referrals/receive.py": "reads",
    "referral_engine/people/matching.py": "writes and reads",
    "referral_engine/notifications/render.py": "reads",
}

DML = {"insert", "update", "delete"}
READ = {"select", "get", "query"}


def _distinct_columns() -> set[str]:
    """Column names found only in the case tables: assigning one on a loaded row
    (`person.given_name = ...`) is an ORM UPDATE of that table."""
    from sqlmodel import SQLModel

    from referral_engine.storage import models  # noqa: F401  (registers the tables)

    mapped = {m.class_.__name__: m.class_.__table__ for m in SQLModel._sa_registry.mappers}
    case = {c.name for n, t in mapped.items() if n in CASE_TABLES for c in t.columns}
    other = {c.name for n, t in mapped.items() if n not in CASE_TABLES for c in t.columns}
    return case - other


COLUMNS = _distinct_columns()


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def _aliases(tree: ast.Module) -> set[str]:
    """Module-level names bound to a case table (`_case = Case.__table__`)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and CASE_TABLES & _names(node.value):
            targets = [t for t in node.targets if isinstance(t, ast.Name | ast.Tuple)]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and "__table__" in ast.unparse(node.value):
                        out.add(n.id)
    return out


def uses(path: Path) -> dict[str, list[int]]:
    """{"writes": [lines], "reads": [lines]} of one file's access to the case tables."""
    tree = ast.parse(path.read_text(), filename=str(path))
    tables = CASE_TABLES | _aliases(tree)
    found: dict[str, list[int]] = {"writes": [], "reads": []}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(
                isinstance(t, ast.Attribute)
                and t.attr in COLUMNS
                and not (isinstance(t.value, ast.Name) and t.value.id == "self")
                for t in targets
            ):
                found["writes"].append(node.lineno)
            continue
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        args = [*node.args, *(k.value for k in node.keywords)]
        named = set().union(*(_names(a) for a in args)) if args else set()
        owner = _names(func.value) if isinstance(func, ast.Attribute) else set()
        dml = name in DML or any(w in name for w in DML)  # also `_bulk_insert(...)`
        # A new row (`Person(...)`), or DML naming a case table.
        if name in CASE_TABLES or (dml and (named & tables or owner & tables)):
            found["writes"].append(node.lineno)
        elif name == "get" and node.args and _names(node.args[0]) & tables:
            found["reads"].append(node.lineno)  # session.get(Case, id), not router.get(...)
        elif name in READ - {"get"} and named & tables:
            found["reads"].append(node.lineno)
    return found


def project_files() -> list[Path]:
    return sorted(
        p
        for d in ("referral_engine", "web")
        for p in (PROJECT_ROOT / d).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def strays(kind: str, allowed: dict[str, str]) -> list[str]:
    """Files that `kind` ("writes" / "reads") the case tables without being allowed to."""
    out = []
    for path in project_files():
        rel = str(path.relative_to(PROJECT_ROOT))
        lines = uses(path)[kind]
        if lines and rel not in allowed and kind not in STILL_TO_MOVE.get(rel, ""):
            out.append(f"{rel}: lines {lines}")
    return out


def test_only_the_store_writes_case_and_person_rows():
    stray = strays("writes", WRITERS)
    assert not stray, "writes to case or person tables outside the store:\n" + "\n".join(stray)


def test_only_the_restricted_query_reads_case_and_person_rows():
    stray = strays("reads", READERS)
    assert not stray, "queries of case or person tables outside the readers:\n" + "\n".join(stray)


def test_the_list_of_modules_still_to_move_only_shrinks():
    """A module moved behind the store or the restricted query leaves STILL_TO_MOVE."""
    stale = []
    for rel, what in STILL_TO_MOVE.items():
        found = uses(PROJECT_ROOT / rel)
        for kind in ("writes", "reads"):
            if kind in what and not found[kind]:
                stale.append(f"{rel} no longer {kind}: take it off STILL_TO_MOVE")
    assert not stale, "\n".join(stale)


def test_the_checker_sees_each_kind_of_write_and_read(tmp_path):
    """The rule's own control: each shape it must catch, caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlalchemy as sa\n"
        "_h = CaseHistory.__table__\n"
        "def f(s):\n"
        "    s.execute(sa.update(Case).values(state='x'))\n"
        "    s.execute(_h.insert().values(event='e'))\n"
        "    s.add(Person(given_name='A'))\n"
        "    s.execute(sa.delete(Deadline))\n"
        "    s.get(Referral, 1)\n"
        "    s.execute(sa.select(Case.id))\n"
        "    s.execute(sa.select(User.id))\n"
        "    row = s.get(Person, 2)\n"
        "    row.family_name = 'B'\n"
        "    _bulk_insert(s, Case.__table__, [])\n"
    )
    found = uses(sample)
    assert sorted(set(found["writes"])) == [4, 5, 6, 7, 12, 13]
    assert sorted(found["reads"]) == [8, 9, 11]
