"""The partnership's measures, declared in policies/reports.yaml and checked against the
pathways at start-up.

A KPI names things the workflows define: a pathway, the events a case went through, a
deadline, a case attribute. Written in code, a renamed event would quietly turn its KPI
into 0; declared here, every name is checked when the product starts, and a name no
pathway has stops start-up with the file, line and field (like every other policy file).

A measure counts the cases of one pathway (from referrals received in the report's
range, through the caller's need-to-know) that meet its `cases` condition, and gives one
`figure`:

- `count`: how many;
- `percent`: the share of them that also meet `of_those` (0-100, one decimal, or null);
- `by_age_group`: how many children and adults;
- `by_attribute: NAME`: how many of each value of a list attribute;
- `deadline_met: NAME` / `deadline_met_pct: NAME`: how many met that deadline, and the
  share of those met by the time it was due.

A condition is `{reached: [events]}` (the case went through any of them), `{attribute:
NAME, includes: VALUE}` / `{attribute: NAME, equals: VALUE}`, `{referrer_agency_kind:
{not: KIND}}`, or `{any: [conditions]}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from referral_engine.engine.intake import OPENING_ATTRIBUTES
from referral_engine.errors import DefinitionError
from referral_engine.pathways.definitions import Workflows
from referral_engine.pathways.effects import ATTRIBUTES_WRITTEN
from referral_engine.policies.yamlfile import Loc, line_for, parse_model


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Not(Strict):
    not_: str = Field(alias="not")


class Condition(Strict):
    reached: tuple[str, ...] | None = None
    attribute: str | None = None
    includes: Any = None
    equals: Any = None
    referrer_agency_kind: Not | None = None
    any: tuple[Condition, ...] | None = None

    @model_validator(mode="after")
    def _one(self) -> Condition:
        kinds = [self.reached, self.attribute, self.referrer_agency_kind, self.any]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("give exactly one of reached, attribute, referrer_agency_kind, any")
        if self.attribute is not None and (self.includes is None) == (self.equals is None):
            raise ValueError("an attribute condition needs includes or equals")
        return self

    def holds(self, row: Any, events: set[str]) -> bool:
        if self.reached is not None:
            return bool(events & set(self.reached))
        if self.attribute is not None:
            value = (row.attributes or {}).get(self.attribute)
            if self.includes is not None:
                return isinstance(value, list) and self.includes in value
            return value == self.equals
        if self.referrer_agency_kind is not None:
            return row.agency_kind != self.referrer_agency_kind.not_
        return any(c.holds(row, events) for c in self.any or ())


class Measure(Strict):
    label: str
    pathway: str
    cases: Condition | None = None
    figure: Literal["count", "percent", "by_age_group"] | None = None
    of_those: Condition | None = None
    by_attribute: str | None = None
    deadline_met: str | None = None
    deadline_met_pct: str | None = None

    @model_validator(mode="after")
    def _one_figure(self) -> Measure:
        given = [self.figure, self.by_attribute, self.deadline_met, self.deadline_met_pct]
        if sum(g is not None for g in given) != 1:
            raise ValueError(
                "give exactly one of figure, by_attribute, deadline_met, deadline_met_pct"
            )
        if (self.figure == "percent") != (self.of_those is not None):
            raise ValueError("a percent figure needs of_those, and only a percent has it")
        return self

    @property
    def deadline(self) -> str | None:
        return self.deadline_met or self.deadline_met_pct


class MaracReturn(Strict):
    # The measures whose conditions the return reuses, so the return and the dashboard
    # count the same cases.
    cases: str  # a count: which cases are MARAC cases
    repeat: str  # a percent: of those, which are repeats


class NrmReturn(Strict):
    by_type: str  # a by_attribute measure: the exploitation types


class Returns(Strict):
    marac: MaracReturn
    nrm: NrmReturn


class ReportsFile(Strict):
    measures: dict[str, Measure]
    returns: Returns


class ReportDefinitions(Strict):
    """What policies/reports.yaml declares, checked: the measures and the returns' parts."""

    measures: dict[str, Measure]
    returns: Returns

    def measure(self, key: str) -> Measure:
        return self.measures[key]


def load_measures(
    directory: Path, workflows: Workflows, known: frozenset[str] | set[str]
) -> ReportDefinitions:
    """Load policies/reports.yaml and check every name in it against the pathways.

    `known`: every pathway name the partnership's policy knows (installed or not); a
    measure of a known pathway this installation has not set up has nothing to count (a
    MASH-only council) and is left out, as for a caller who may not see that pathway."""
    path = directory / "reports.yaml"
    parsed, lines = parse_model(ReportsFile, path)
    for key, m in parsed.measures.items():
        if m.pathway in workflows.pathways:
            _check(_Names(str(path), lines, key, m, workflows.get(m.pathway).definition))
        elif m.pathway not in known:
            raise DefinitionError(
                str(path), line_for(lines, ("measures", key, "pathway")),
                f"measures.{key}.pathway", f"no pathway is called {m.pathway!r}",
            )  # fmt: skip
    for name, part in (("marac", parsed.returns.marac), ("nrm", parsed.returns.nrm)):
        for field, key in part.model_dump().items():
            if key not in parsed.measures:
                raise DefinitionError(
                    str(path), line_for(lines, ("returns", name, field)),
                    f"returns.{name}.{field}", f"no measure is called {key!r}",
                )  # fmt: skip
    return ReportDefinitions(measures=dict(parsed.measures), returns=parsed.returns)


class _Names:
    """What one measure may name: its pathway's events, deadlines and case attributes."""

    def __init__(self, path: str, lines: dict[Loc, int], key: str, m: Measure, wf: Any):
        self.path, self.lines, self.key, self.m = path, lines, key, m
        effects = [e.effects for e in wf.events.values()] + [wf.on_open]
        self.events = set(wf.events)
        self.deadlines = {
            (params or {}).get("name") for each in effects for name, params in each
            if name == "set_deadline"
        }  # fmt: skip
        self.attributes = set(OPENING_ATTRIBUTES)
        for each in effects:
            for name, params in each:
                params = params or {}
                self.attributes |= set(params.get("values") or {}) | set(params.get("fixed") or {})
                if params.get("attribute"):
                    self.attributes.add(params["attribute"])
                self.attributes |= set(ATTRIBUTES_WRITTEN.get(name, ()))

    def fail(self, loc: Loc, reason: str) -> DefinitionError:
        return DefinitionError(
            self.path, line_for(self.lines, ("measures", self.key, *loc)),
            ".".join(map(str, ("measures", self.key, *loc))), reason,
        )  # fmt: skip


def _check(names: _Names) -> None:
    m = names.m
    _check_condition(names, m.cases, ("cases",))
    _check_condition(names, m.of_those, ("of_those",))
    if m.by_attribute is not None and m.by_attribute not in names.attributes:
        raise names.fail(
            ("by_attribute",), f"no {m.pathway} event sets a case attribute {m.by_attribute!r}"
        )
    if m.deadline is not None and m.deadline not in names.deadlines:
        field = "deadline_met" if m.deadline_met else "deadline_met_pct"
        raise names.fail((field,), f"{m.pathway} sets no deadline named {m.deadline!r}")


def _check_condition(names: _Names, c: Condition | None, loc: Loc) -> None:
    if c is None:
        return
    for n, event in enumerate(c.reached or ()):
        if event not in names.events:
            raise names.fail((*loc, "reached", n), f"{names.m.pathway} has no event {event!r}")
    if c.attribute is not None and c.attribute not in names.attributes:
        raise names.fail(
            (*loc, "attribute"),
            f"no {names.m.pathway} event sets a case attribute {c.attribute!r}",
        )
    for n, inner in enumerate(c.any or ()):
        _check_condition(names, inner, (*loc, "any", n))
