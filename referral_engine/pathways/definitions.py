"""Pathway definitions (workflows/*.yaml): loaded, validated, compiled, versioned.

A definition says what can happen on a pathway: states, events with from/to (or routes
chosen by the event's data), the permission for each event, guards, the schema of its
data and its effects. Each is compiled once into a `transitions` machine shared by every
case on that version of the definition. The version is the SHA-256 of the file's bytes;
each case records the version it runs on and keeps running on it after the YAML changes
(old versions are kept in the `workflow_version` table).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from transitions import Machine, MachineError
from transitions.extensions import GraphMachine

from referral_engine.errors import (
    DefinitionError,
    FieldError,
    InvalidData,
    NotValidNow,
)
from referral_engine.pathways.effects import EFFECTS, Params
from referral_engine.pathways.eventdata import EventSchema, FieldSpec
from referral_engine.pathways.guards import GUARDS
from referral_engine.pathways.snapshot import Context, holds
from referral_engine.policies.policy import Policy
from referral_engine.policies.yamlfile import Loc, line_for, loads


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StateDef(Strict):
    label: str
    description: str = ""
    terminal: bool = False


class Route(Strict):
    from_: tuple[str, ...] | None = Field(default=None, alias="from")
    to: str | None = None
    when: dict[str, Any] | None = None


def _named_list(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """`[name, {name: {params}}]` -> [(name, params)]."""
    out = []
    for item in value or []:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            out.append((name, params or {}))
        else:
            raise ValueError("each entry is a name, or a mapping of one name to its parameters")
    return out


class EventDef(Strict):
    label: str
    description: str = ""
    from_: tuple[str, ...] = Field(alias="from")
    to: str | None = None
    routes: tuple[Route, ...] | None = None
    permission: str | None = None
    # Fired only by the scheduler (`tick`), never offered to a user.
    system: bool = False
    data: dict[str, FieldSpec] = {}
    guards: tuple[tuple[str, dict[str, Any]], ...] = ()
    effects: tuple[tuple[str, dict[str, Any]], ...] = ()

    _named = field_validator("guards", "effects", mode="before")(lambda cls, v: _named_list(v))

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class WorkflowDef(Strict):
    pathway: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    description: str = ""
    initial: str
    # When the subject is matched to a person record: as the referral arrives, or only
    # when an event's `link_person` effect says so (the NRM: not before consent, so a
    # Duty to Notify record is never tied to a named person, not even in the audit log).
    identify: Literal["on_referral", "by_effect"] = "on_referral"
    states: dict[str, StateDef]
    # What people call the case attributes this pathway keeps ("rag_rationale":
    # "Rationale for the RAG rating"), for the case record, history and exports.
    attributes: dict[str, str] = {}
    on_open: tuple[tuple[str, dict[str, Any]], ...] = ()
    events: dict[str, EventDef]

    _named = field_validator("on_open", mode="before")(lambda cls, v: _named_list(v))


class _Model:
    """What a `transitions` machine moves: a plain holder of the state, one per call."""

    __slots__ = ("state",)

    def __init__(self, state: str):
        self.state = state


Planned = list[tuple[str, Params]]


@dataclass(frozen=True)
class Labels:
    events: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    # event -> its data fields' labels
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Workflow:
    definition: WorkflowDef
    version: str
    source: str
    origin: str
    schemas: dict[str, EventSchema]
    effects: dict[str, Planned]
    on_open: Planned
    machine: Machine = field(repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The events each state accepts, asked of the machine once: it never changes once
    # built, and `get_triggers` scans every event on each call (a fire asks once and the
    # case page in its answer again: ~5% of the server's time, bench/README.md).
    _from: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def pathway(self) -> str:
        return self.definition.pathway

    @cached_property
    def pathway_fields(self) -> frozenset[str]:
        """Names of event data fields, and of the case attributes set from them, whose
        values name other pathways (choices from `onward_pathways`, e.g. a MASH decision's
        `onward`). A reader who may not see a pathway must not read its name there either
        (DESIGN.md: a record the caller may not see is never named)."""
        names: set[str] = set()
        for event in self.definition.events.values():
            fields = {n for n, f in event.data.items() if f.choices_from == "onward_pathways"}
            names |= fields
            for effect, params in event.effects:
                if effect == "set_attributes":
                    values = (params or {}).get("values") or {}
                    names |= {attr for attr, src in values.items() if src in fields}
        return frozenset(names)

    def permission(self, event: str) -> str:
        return self.definition.events[event].permission or f"{self.pathway}:case:{event}"

    def triggers(self, state: str) -> tuple[str, ...]:
        """Every event the machine accepts in `state`, the scheduler's included."""
        return self._events_in(state)[0]

    def events_from(self, state: str) -> list[str]:
        """The events a person may fire in `state` (not the scheduler's own)."""
        return list(self._events_in(state)[1])

    def _events_in(self, state: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        got = self._from.get(state)
        if got is None:
            every = tuple(self.machine.get_triggers(state))
            people = tuple(e for e in every if not self.definition.events[e].system)
            got = self._from[state] = (every, people)
        return got

    @cached_property
    def labels(self) -> Labels:
        """What people call this pathway's events, states, fields and case attributes, so
        a case's page and history show "RAG rating", not the code `rag`."""
        events = self.definition.events
        fields = {
            name: {f: spec.label for f, spec in ev.data.items() if spec.label}
            for name, ev in events.items()
        }
        # An attribute kept under its field's own name goes by that field's label. One
        # kept under another name does not: the label was written for its form ("Reason",
        # "Decision") and says less on the case record than the attribute's name does
        # (`exit_reason`, `conclusive_grounds`).
        attributes: dict[str, str] = dict(self.definition.attributes)
        for event, planned in self.effects.items():
            for name, params in planned:
                if name == "set_attributes":
                    for attribute, source in params.values.items():  # type: ignore[attr-defined]
                        if attribute == source and source in fields.get(event, {}):
                            attributes.setdefault(attribute, fields[event][source])
        return Labels(
            events={name: ev.label for name, ev in events.items()},
            states={name: st.label for name, st in self.definition.states.items()},
            fields=fields,
            attributes=attributes,
        )

    def needs_history(self, event: str) -> bool:
        """Whether the event's effects look at the person's other cases (a DASH
        assessment counts repeat MARAC referrals); only then does the engine read them."""
        return any(name == "assess_dash" for name, _ in self.effects[event])

    def is_terminal(self, state: str) -> bool:
        return self.definition.states[state].terminal

    def next_state(self, ctx: Context) -> str:
        """Run the event through the machine: the state it leads to, or why it cannot."""
        event = self.machine.events.get(ctx.event)
        if event is None:
            raise InvalidData(FieldError("event", f"{ctx.event} is not an event of {self.pathway}"))
        model = _Model(ctx.snapshot.state)
        with self.lock:
            try:
                moved = event.trigger(model, ctx=ctx)
            except MachineError:
                raise NotValidNow(
                    f"{ctx.event} cannot happen while the case is {ctx.snapshot.state}"
                ) from None
        if not moved:
            failures = ctx.failures or [("data", "no route of this event matches the data")]
            raise InvalidData([FieldError(f, r) for f, r in dict.fromkeys(failures)])
        return model.state

    @cached_property
    def mermaid(self) -> str:
        d = self.definition
        transitions = [
            {"trigger": name, "source": list(src), "dest": dest or src[0]}
            for name, ev in d.events.items()
            for src, dest in event_routes(ev)
        ]
        graph = GraphMachine(
            model=type("Diagram", (), {})(),
            states=list(d.states),
            transitions=transitions,
            initial=d.initial,
            auto_transitions=False,
            graph_engine="mermaid",
            title=d.label,
        )
        return graph.get_graph().draw(None)

    def describe(self, policy: Policy) -> dict[str, Any]:
        d = self.definition
        return {
            "pathway": d.pathway,
            "label": d.label,
            "description": d.description,
            "version": self.version,
            "initial": d.initial,
            "states": {k: v.model_dump() for k, v in d.states.items()},
            "events": {
                name: {
                    "label": ev.label,
                    "description": ev.description,
                    "from": list(ev.from_),
                    "to": ev.to,
                    "routes": [r.model_dump(by_alias=True) for r in ev.routes or ()],
                    "permission": self.permission(name),
                    "roles": policy.roles_granting(self.permission(name)),
                    "system": ev.system,
                    "data": self.schemas[name].describe(),
                }
                for name, ev in d.events.items()
            },
            "mermaid": self.mermaid,
        }


def event_routes(ev: EventDef) -> list[tuple[tuple[str, ...], str | None]]:
    if ev.routes:
        return [(r.from_ or ev.from_, r.to) for r in ev.routes]
    return [(ev.from_, ev.to)]


def _route_condition(when: dict[str, Any] | None):
    def condition(event_data) -> bool:
        return holds(event_data.kwargs["ctx"], when)

    return condition


def _guard_condition(name: str, params: BaseModel):
    guard = GUARDS[name]

    def condition(event_data) -> bool:
        ctx: Context = event_data.kwargs["ctx"]
        failure = guard.check(ctx, params)
        if failure:
            ctx.failures.append(failure)
        return failure is None

    return condition


def version_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def compile_workflow(source: str, origin: str, policy: Policy) -> Workflow:
    """Parse, validate and compile one definition; errors name origin, line and field."""
    data, lines = loads(source, origin)
    try:
        d = WorkflowDef.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        loc = tuple("from" if p == "from_" else p for p in loc)
        raise DefinitionError(
            origin, line_for(lines, loc), ".".join(map(str, loc)) or "(file)", err["msg"]
        ) from None
    checker = _Checker(origin, lines, policy, d)
    checker.check()
    vocab = {
        name: dict(getattr(policy.reference, name)) for name in type(policy.reference).model_fields
    }
    schemas = {
        name: EventSchema(f"{d.pathway}_{name}", ev.data, vocab) for name, ev in d.events.items()
    }
    transitions = []
    for name, ev in d.events.items():
        guards = [_guard_condition(g, checker.guard_params[(name, i)]) for i, (g, _) in
                  enumerate(ev.guards)]  # fmt: skip
        for (sources, dest), route in zip(event_routes(ev), ev.routes or [None], strict=False):
            transitions.append(
                {
                    "trigger": name,
                    "source": list(sources),
                    "dest": dest,
                    "conditions": [_route_condition(route.when if route else None), *guards],
                }
            )
    machine = Machine(
        model=None,
        states=list(d.states),
        transitions=transitions,
        initial=d.initial,
        auto_transitions=False,
        send_event=True,
    )
    return Workflow(
        definition=d,
        version=version_of(source),
        source=source,
        origin=origin,
        schemas=schemas,
        effects={n: checker.effects[("events", n)] for n in d.events},
        on_open=checker.effects[("on_open",)],
        machine=machine,
    )


class _Checker:
    """Cross-checks pydantic cannot make alone: names that must refer to something."""

    def __init__(self, origin: str, lines: dict[Loc, int], policy: Policy, d: WorkflowDef):
        self.origin, self.lines, self.policy, self.d = origin, lines, policy, d
        self.guard_params: dict[tuple[str, int], BaseModel] = {}
        self.effects: dict[tuple[str, ...], Planned] = {}

    def fail(self, loc: Loc, reason: str) -> None:
        raise DefinitionError(
            self.origin, line_for(self.lines, loc), ".".join(map(str, loc)), reason
        )

    def state(self, loc: Loc, name: str | None) -> None:
        if name is not None and name not in self.d.states:
            self.fail(loc, f"unknown state {name!r} (states: {', '.join(self.d.states)})")

    def check(self) -> None:
        d = self.d
        stem = Path(self.origin).stem
        if Path(self.origin).suffix in (".yaml", ".yml") and stem != d.pathway:
            self.fail(("pathway",), f"must match the file name ({stem!r})")
        self.state(("initial",), d.initial)
        self.effects[("on_open",)] = self.effect_list(("on_open",), d.on_open)
        vocab = type(self.policy.reference).model_fields
        for name, ev in d.events.items():
            loc: Loc = ("events", name)
            for i, s in enumerate(ev.from_):
                self.state((*loc, "from", i), s)
            self.state((*loc, "to"), ev.to)
            if ev.routes and ev.to:
                self.fail((*loc, "to"), "give either to or routes, not both")
            for i, r in enumerate(ev.routes or ()):
                self.state((*loc, "routes", i, "to"), r.to)
                for j, s in enumerate(r.from_ or ()):
                    self.state((*loc, "routes", i, "from", j), s)
            for fname, spec in ev.data.items():
                if spec.choices_from and spec.choices_from not in vocab:
                    self.fail((*loc, "data", fname, "choices_from"),
                              f"unknown vocabulary {spec.choices_from!r} "
                              f"(policies/reference.yaml has {', '.join(vocab)})")  # fmt: skip
            for i, (gname, params) in enumerate(ev.guards):
                if gname not in GUARDS:
                    self.fail((*loc, "guards", i), f"unknown guard {gname!r} "
                              f"(known: {', '.join(GUARDS)})")  # fmt: skip
                try:
                    self.guard_params[(name, i)] = GUARDS[gname].params.model_validate(params)
                except ValidationError as exc:
                    self.fail((*loc, "guards", i, gname), exc.errors()[0]["msg"])
            self.effects[loc] = self.effect_list((*loc, "effects"), ev.effects)

    def effect_list(self, loc: Loc, items: tuple[tuple[str, dict[str, Any]], ...]) -> Planned:
        out: Planned = []
        for i, (name, params) in enumerate(items):
            if name not in EFFECTS:
                self.fail((*loc, i), f"unknown effect {name!r} (known: {', '.join(EFFECTS)})")
            try:
                p = EFFECTS[name].params.model_validate(params)
            except ValidationError as exc:
                err = exc.errors()[0]
                self.fail((*loc, i, name, *err["loc"]), err["msg"])
            sla = getattr(p, "sla", None)
            if sla is not None and sla not in self.policy.sla:
                self.fail((*loc, i, name, "sla"), f"unknown SLA {sla!r} (see policies/sla.yaml)")
            out.append((name, p))
        return out


class Workflows:
    """Every pathway's current definition, and any older version a case still runs on."""

    def __init__(self, directory: Path, policy: Policy):
        self.policy = policy
        self.current: dict[str, Workflow] = {}
        self._by_version: dict[str, Workflow] = {}
        for path in sorted(directory.glob("*.yaml")):
            wf = compile_workflow(path.read_text(encoding="utf-8"), str(path), policy)
            self.current[wf.pathway] = wf
            self._by_version[wf.version] = wf
        if "mash" not in self.current:
            raise DefinitionError(str(directory), None, "mash.yaml", "the MASH pathway is required")

    @property
    def pathways(self) -> frozenset[str]:
        return frozenset(self.current)

    def get(self, pathway: str) -> Workflow:
        return self.current[pathway]

    def version(self, version: str, load_source) -> Workflow:
        """The definition a case runs on; `load_source(version)` fetches an old one."""
        wf = self._by_version.get(version)
        if wf is None:
            source = load_source(version)
            if source is None:
                raise LookupError(f"workflow version {version} is not stored")
            wf = compile_workflow(source, f"workflow_version:{version[:12]}", self.policy)
            self._by_version[version] = wf
        return wf
