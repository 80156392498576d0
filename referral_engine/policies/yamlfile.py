"""YAML with line numbers, so a bad workflow or policy file is reported by file and line.

PyYAML's composed nodes carry their position; we walk them once, building plain Python
data and a map from each key path to the line it was written on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from referral_engine.errors import DefinitionError

Loc = tuple[Any, ...]
M = TypeVar("M", bound=BaseModel)


def load(path: Path) -> tuple[Any, dict[Loc, int]]:
    text = path.read_text(encoding="utf-8")
    return loads(text, str(path))


def loads(text: str, name: str) -> tuple[Any, dict[Loc, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise DefinitionError(name, line, "(syntax)", str(exc.problem or exc)) from None
    lines: dict[Loc, int] = {}
    if node is None:
        raise DefinitionError(name, 1, "(file)", "the file is empty")
    constructor = yaml.SafeLoader("")
    return _walk(node, (), lines, constructor, name), lines


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], constructor: Any, name: str) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if key in out:
                raise DefinitionError(
                    name, key_node.start_mark.line + 1, ".".join(map(str, (*loc, key))),
                    "duplicate key",
                )  # fmt: skip
            out[key] = _walk(value_node, (*loc, key), lines, constructor, name)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(n, (*loc, i), lines, constructor, name) for i, n in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def line_for(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest part of `loc` that exists in the file."""
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def parse_model(model: type[M], path: Path) -> tuple[M, dict[Loc, int]]:
    """Load `path` and validate it as `model`; the first error names file, line, field."""
    try:
        data, lines = load(path)
    except DefinitionError as exc:
        raise DefinitionError(str(path), exc.line, exc.field, exc.reason) from None
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        raise DefinitionError(
            str(path), line_for(lines, loc), ".".join(map(str, loc)) or "(file)", err["msg"]
        ) from None
