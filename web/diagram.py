"""A pathway's state diagram, drawn from its definition as inline SVG, here in Python.

No JavaScript and nothing from elsewhere: a small layered layout (after Sugiyama).

1. Every transition of the definition (each event's `from`/`to`, or its routes; an event
   without `to` leaves the case where it is) becomes an edge; events between the same two
   states share one arrow with one label line each.
2. Edges that lead back up the pathway (found by a depth-first walk from the initial
   state) are set aside, and the states are put in layers by a breadth-first walk from the
   initial state (Kahn's order): each state one layer below the deepest state leading to
   it, so every forward arrow points down. States no event reaches go in a last row.
3. An arrow spanning several layers passes through a placeholder in each layer between;
   the order in each layer is improved by barycentre sweeps (fewer crossings), then each
   state is pulled towards the states it is joined to without overlapping its neighbours.
4. Arrows are smooth curves labelled with event names; an event that leaves the state as
   it is draws a loop; events fired only by the scheduler are dashed; terminal states
   have a double border.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from itertools import pairwise
from typing import Any

from markupsafe import Markup

NODE_H = 52
PAD_X = 16
MIN_W = 120
GAP_X = 44
TOP = 56  # room for the start marker
MARGIN = 16
LOOP = 26  # how far a self-loop reaches to the right of its state
LINE_H = 15  # one line of an arrow's label
GAP_Y = 34  # the least space between two rows, besides their labels
CHAR_LABEL = 8.2  # rough widths of a character, for sizing boxes (bold 14px sans)
CHAR_NAME = 7.1  # (12px monospace)
DUMMY_W = 14

INK = "#1d2329"
MUTED = "#505a62"
BRAND = "#1d4f76"
LINE = "#505a62"
SANS = "'Segoe UI', Arial, 'Helvetica Neue', sans-serif"
MONO = "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace"


@dataclass
class Node:
    key: str
    layer: int = 0
    w: float = DUMMY_W
    right: float = 0.0  # extra room on the right (a self-loop and its label)
    x: float = 0.0
    dummy: bool = False
    label: str = ""
    terminal: bool = False
    reachable: bool = True
    description: str = ""

    @property
    def cx(self) -> float:
        return self.x + self.w / 2


@dataclass
class Edge:
    src: str
    dst: str
    events: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)  # top to bottom, dummies between
    up: bool = False  # drawn from the bottom of the chain to its top


def _transitions(events: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(from, to) -> event names, in definition order."""
    out: dict[tuple[str, str], list[str]] = {}
    for name, ev in events.items():
        routes = ev.get("routes") or [{"from": None, "to": None}]
        for route in routes:
            sources = route.get("from") or ev["from"]
            target = route.get("to") or ev.get("to")
            for src in sources:
                names = out.setdefault((src, target or src), [])
                if name not in names:
                    names.append(name)
    return out


def _back_edges(states: list[str], initial: str, succ: dict[str, list[str]]) -> set[tuple]:
    """Edges into a state still being explored by a depth-first walk: they point back up."""
    back: set[tuple[str, str]] = set()
    seen: set[str] = set()
    for root in [initial, *states]:
        if root in seen:
            continue
        seen.add(root)
        on_path = {root}
        stack = [(root, iter(succ[root]))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                on_path.discard(node)
            elif nxt in on_path:
                back.add((node, nxt))
            elif nxt not in seen:
                seen.add(nxt)
                on_path.add(nxt)
                stack.append((nxt, iter(succ[nxt])))
    return back


def _layers(states: list[str], initial: str, forward: list[tuple[str, str]]) -> dict[str, int]:
    """Breadth-first from the initial state (Kahn's order), each state one layer below the
    deepest state leading to it; states it never reaches go below everything else."""
    succ: dict[str, list[str]] = {s: [] for s in states}
    for a, b in forward:
        succ[a].append(b)
    reach = {initial}
    queue = [initial]
    for s in queue:
        for t in succ[s]:
            if t not in reach:
                reach.add(t)
                queue.append(t)

    def longest(nodes: list[str], roots: list[str]) -> dict[str, int]:
        members = set(nodes)
        indeg = {s: 0 for s in nodes}
        for a, b in forward:
            if a in members and b in members:
                indeg[b] += 1
        layer = dict.fromkeys(roots, 0)
        order = [s for s in nodes if indeg[s] == 0]
        for s in order:
            layer.setdefault(s, 0)
            for t in succ[s]:
                if t in members:
                    layer[t] = max(layer.get(t, 0), layer[s] + 1)
                    indeg[t] -= 1
                    if indeg[t] == 0:
                        order.append(t)
        return layer

    layer = longest([s for s in states if s in reach], [initial])
    rest = [s for s in states if s not in reach]
    if rest:
        below = max(layer.values(), default=-1) + 1
        layer.update({s: below + n for s, n in longest(rest, []).items()})
    return layer


def _crossings(order: list[list[str]], segments: list[tuple[str, str]], pos) -> int:
    total = 0
    for upper in range(len(order) - 1):
        members = set(order[upper])
        segs = [(pos[a], pos[b]) for a, b in segments if a in members]
        for i, (a1, b1) in enumerate(segs):
            for a2, b2 in segs[i + 1 :]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def layout(definition: dict[str, Any]) -> tuple[dict[str, Node], list[Edge], list[Edge]]:
    """States placed in rows, with the arrows between them and the loops on them."""
    states = list(definition["states"])
    initial = definition["initial"]
    pairs = _transitions(definition["events"])
    succ: dict[str, list[str]] = {s: [] for s in states}
    for a, b in pairs:
        if a != b and b not in succ[a]:
            succ[a].append(b)
    back = _back_edges(states, initial, succ)
    forward = [(a, b) for a, b in pairs if a != b and (a, b) not in back]
    layer = _layers(states, initial, forward)

    nodes: dict[str, Node] = {}
    for s in states:
        info = definition["states"][s]
        text = info.get("label") or s
        w = max(MIN_W, len(text) * CHAR_LABEL + 2 * PAD_X, len(s) * CHAR_NAME + 2 * PAD_X)
        nodes[s] = Node(
            s, layer[s], w=round(w), label=text, terminal=bool(info.get("terminal")),
            description=info.get("description") or "",
        )  # fmt: skip
    reached = [initial]
    for s in reached:
        reached.extend(t for t in succ[s] if t not in reached)
    for s in states:
        nodes[s].reachable = s in reached

    loops: list[Edge] = []
    edges: list[Edge] = []
    for (a, b), names in pairs.items():
        if a == b:
            loops.append(Edge(a, b, names))
            width = max(len(n) for n in names) * CHAR_NAME
            nodes[a].right = LOOP + 8 + width
            continue
        up = layer[b] < layer[a]
        top, bottom = (b, a) if up else (a, b)
        chain = [top]
        for depth in range(layer[top] + 1, layer[bottom]):
            key = f"~{a}~{b}~{depth}"
            nodes[key] = Node(key, depth, dummy=True)
            chain.append(key)
        chain.append(bottom)
        edges.append(Edge(a, b, names, chain, up))

    rows = max(n.layer for n in nodes.values()) + 1
    order: list[list[str]] = [[] for _ in range(rows)]
    for key, n in nodes.items():
        order[n.layer].append(key)
    segments = [(e.chain[i], e.chain[i + 1]) for e in edges for i in range(len(e.chain) - 1)]
    above: dict[str, list[str]] = {k: [] for k in nodes}
    below: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in segments:
        below[a].append(b)
        above[b].append(a)

    def positions() -> dict[str, int]:
        return {k: i for row in order for i, k in enumerate(row)}

    best = [list(r) for r in order]
    best_cross = _crossings(order, segments, positions())
    for sweep in range(8):
        downwards = sweep % 2 == 0
        span = range(1, rows) if downwards else range(rows - 2, -1, -1)
        for r in span:
            pos = positions()
            near = above if downwards else below

            def bary(k: str, pos=pos, near=near) -> float:
                links = near[k]
                return sum(pos[j] for j in links) / len(links) if links else pos[k]

            order[r].sort(key=bary)
        crossing = _crossings(order, segments, positions())
        if crossing < best_cross:
            best, best_cross = [list(r) for r in order], crossing
    order = best

    # Pack each row, then pull each state towards those it is joined to (keeping order).
    for row in order:
        x = 0.0
        for k in row:
            nodes[k].x = x
            x += nodes[k].w + nodes[k].right + GAP_X

    def settle(row: list[str], want: dict[str, float]) -> None:
        ns = [nodes[k] for k in row]
        left = []
        for i, n in enumerate(ns):
            x = want[n.key] - n.w / 2
            if i:
                p = ns[i - 1]
                x = max(x, left[-1] + p.w + p.right + GAP_X)
            left.append(x)
        right = [0.0] * len(ns)
        for i in range(len(ns) - 1, -1, -1):
            n = ns[i]
            x = want[n.key] - n.w / 2
            if i < len(ns) - 1:
                x = min(x, right[i + 1] - n.w - n.right - GAP_X)
            right[i] = x
        for n, lx, rx in zip(ns, left, right, strict=True):
            n.x = (lx + rx) / 2

    def want_for(row: list[str], near: dict[str, list[str]]) -> dict[str, float]:
        out = {}
        for k in row:
            links = near[k]
            out[k] = sum(nodes[j].cx for j in links) / len(links) if links else nodes[k].cx
        return out

    both = {k: above[k] + below[k] for k in nodes}
    for sweep in range(6):
        if sweep == 5:
            for row in order:
                settle(row, want_for(row, both))
        elif sweep % 2 == 0:
            for row in order[1:]:
                settle(row, want_for(row, above))
        else:
            for row in reversed(order[:-1]):
                settle(row, want_for(row, below))
    shift = MARGIN - min(n.x for n in nodes.values())
    for n in nodes.values():
        n.x += shift
    return nodes, edges, loops


# --- drawing ---------------------------------------------------------------------------


def _text(x, y, s, *, cls, size, anchor="middle", weight=None, family=SANS, fill=INK):
    attrs = [
        f'x="{x:.1f}"', f'y="{y:.1f}"', f'class="{cls}"', f'font-size="{size}"',
        f'font-family="{escape(family)}"', f'text-anchor="{anchor}"', f'fill="{fill}"',
    ]  # fmt: skip
    if weight:
        attrs.append(f'font-weight="{weight}"')
    return f"<text {' '.join(attrs)}>{escape(s)}</text>"


def _bezier(p, q, t: float) -> tuple[float, float]:
    """Point at t on the vertical-tangent curve from p to q (controls at mid-height)."""
    (x1, y1), (x2, y2) = p, q
    ym = (y1 + y2) / 2
    u = 1 - t
    x = u**3 * x1 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x2
    y = u**3 * y1 + 3 * u * u * t * ym + 3 * u * t * t * ym + t**3 * y2
    return x, y


def _x_at(p, q, y: float) -> float:
    lo, hi = 0.0, 1.0
    rising = q[1] > p[1]
    for _ in range(30):
        mid = (lo + hi) / 2
        if (_bezier(p, q, mid)[1] < y) == rising:
            lo = mid
        else:
            hi = mid
    return _bezier(p, q, (lo + hi) / 2)[0]


def svg(definition: dict[str, Any], *, dom_id: str = "diagram") -> Markup:
    """The whole diagram as one <svg> element, ready to put in a page."""
    nodes, edges, loops = layout(definition)
    events = definition["events"]
    rows = max(n.layer for n in nodes.values()) + 1

    def label_lines(e: Edge) -> list[str]:
        return [n + (" (automatic)" if events[n].get("system") else "") for n in e.events]

    # Each arrow's label sits in the gap below its source's row (above, for arrows up).
    def label_gap(e: Edge) -> int:
        return nodes[e.chain[-1]].layer - 1 if e.up else nodes[e.chain[0]].layer

    # Ports: arrows leave the bottom (or top) of a state spread out in the order of where
    # they go, so that they do not start on top of each other.
    ends: dict[tuple[str, str], list[tuple[float, Edge, str]]] = {}
    for e in edges:
        top, first = e.chain[0], e.chain[1]
        last, bottom = e.chain[-2], e.chain[-1]
        ends.setdefault((top, "bottom"), []).append((nodes[first].cx, e, "top"))
        ends.setdefault((bottom, "top"), []).append((nodes[last].cx, e, "bottom"))
    port: dict[tuple[int, str], float] = {}
    for (key, _side), items in ends.items():
        n = nodes[key]
        items.sort(key=lambda i: i[0])
        step = min(34.0, (n.w - 24) / max(len(items) - 1, 1))
        for i, (_x, e, which) in enumerate(items):
            port[(id(e), which)] = n.cx + (i - (len(items) - 1) / 2) * step

    # Row heights: labels in one gap are stacked in lanes so that they do not overlap.
    lanes: dict[int, list[list[tuple[float, float, Edge]]]] = {g: [] for g in range(rows)}
    for e in sorted(edges, key=lambda e: port[(id(e), "top")]):
        lines = label_lines(e)
        width = max(len(s) for s in lines) * 7.3 + 24
        a, b = port[(id(e), "top")], nodes[e.chain[1]].cx
        mid = (a + b) / 2 if len(e.chain) == 2 else a
        if e.up and len(e.chain) > 2:
            mid = nodes[e.chain[-2]].cx
        span = (mid - width / 2, mid + width / 2, e)
        gap = lanes[label_gap(e)]
        for lane in gap:
            if all(span[1] < o[0] or span[0] > o[1] for o in lane):
                lane.append(span)
                break
        else:
            gap.append([span])
    gap_h = {
        g: GAP_Y + sum(max(len(label_lines(s[2])) for s in lane) * LINE_H + 6 for lane in ls)
        for g, ls in lanes.items()
    }
    row_y: list[float] = []
    y = float(TOP)
    for r in range(rows):
        row_y.append(y)
        y += NODE_H + max(gap_h[r], GAP_Y + LINE_H)
    height = row_y[-1] + NODE_H + MARGIN + 8
    width = max(n.x + n.w + n.right for n in nodes.values()) + MARGIN

    def top_of(k):
        return row_y[nodes[k].layer]

    out: list[str] = []
    title = f"{definition.get('label') or definition.get('pathway')}: states and events"
    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="wf-diagram" id="{escape(dom_id)}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'role="img" aria-labelledby="{dom_id}-title {dom_id}-desc">'
    )
    out.append(f'<title id="{dom_id}-title">{escape(title)}</title>')
    desc = (
        f"Starts at {definition['initial']}. "
        + " ".join(f"{e.src} to {e.dst} by {', '.join(e.events)}." for e in edges)
        + "".join(f" {lp.src} stays by {', '.join(lp.events)}." for lp in loops)
    )
    out.append(f'<desc id="{dom_id}-desc">{escape(desc)}</desc>')
    out.append(
        "<defs>"
        f'<marker id="{dom_id}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        f'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{LINE}"/></marker>'
        "</defs>"
    )

    # the start marker
    first = nodes[definition["initial"]]
    sy = row_y[first.layer]
    out.append(
        f'<g class="wf-start"><circle cx="{first.cx:.1f}" cy="{sy - 36:.1f}" r="8" fill="{INK}"/>'
        f'<path d="M{first.cx:.1f},{sy - 28:.1f} L{first.cx:.1f},{sy - 2:.1f}" stroke="{LINE}" '
        f'stroke-width="1.6" fill="none" marker-end="url(#{dom_id}-arrow)"/></g>'
    )

    # arrows
    labels: list[str] = []
    for e in edges:
        pts: list[tuple[float, float]] = [(port[(id(e), "top")], top_of(e.chain[0]) + NODE_H)]
        kinds: list[str] = []
        for k in e.chain[1:-1]:
            cx = nodes[k].cx
            pts.append((cx, top_of(k)))
            kinds.append("C")
            pts.append((cx, top_of(k) + NODE_H))
            kinds.append("L")
        pts.append((port[(id(e), "bottom")], top_of(e.chain[-1])))
        kinds.append("C")
        if e.up:
            pts.reverse()
            kinds.reverse()
        d = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
        for (p, q), kind in zip(pairwise(pts), kinds, strict=True):
            if kind == "L":
                d.append(f"L{q[0]:.1f},{q[1]:.1f}")
            else:
                ym = (p[1] + q[1]) / 2
                d.append(f"C{p[0]:.1f},{ym:.1f} {q[0]:.1f},{ym:.1f} {q[0]:.1f},{q[1]:.1f}")
        automatic = all(events[n].get("system") for n in e.events)
        dash = ' stroke-dasharray="6 4"' if automatic else ""
        tip = "; ".join(_event_title(n, events[n]) for n in e.events)
        out.append(
            f'<g class="wf-edge"><title>{escape(tip)}</title><path d="{" ".join(d)}" '
            f'fill="none" stroke="{LINE}" stroke-width="1.6"{dash} '
            f'marker-end="url(#{dom_id}-arrow)"/></g>'
        )
        # its label, on the curve where it crosses the label's lane
        g = label_gap(e)
        lane_no = next(i for i, lane in enumerate(lanes[g]) if any(s[2] is e for s in lane))
        lines = label_lines(e)
        lane_top = row_y[g] + NODE_H + GAP_Y / 2 + 2
        for lane in lanes[g][:lane_no]:
            lane_top += max(len(label_lines(s[2])) for s in lane) * LINE_H + 6
        block_h = len(lines) * LINE_H
        centre_y = lane_top + block_h / 2
        seg = _gap_segment(e, g, nodes, port, row_y)
        lx = _x_at(seg[0], seg[1], centre_y) if seg[0][1] != seg[1][1] else seg[0][0]
        labels.append(_label_box(lx, lane_top, lines, anchor="middle"))

    # states
    for n in nodes.values():
        if n.dummy:
            continue
        y0 = row_y[n.layer]
        cls = "wf-state" + (" wf-terminal" if n.terminal else "")
        tip = n.label + (f": {n.description}" if n.description else "")
        if n.terminal:
            tip += " (final state)"
        if not n.reachable:
            tip += " (no event leads here)"
        fill = "#eef1f4" if n.terminal else "#ffffff"
        dashed = "" if n.reachable else ' stroke-dasharray="5 4"'
        out.append(f'<g class="{cls}"><title>{escape(tip)}</title>')
        out.append(
            f'<rect x="{n.x:.1f}" y="{y0:.1f}" width="{n.w:.1f}" height="{NODE_H}" rx="8" '
            f'fill="{fill}" stroke="{BRAND}" stroke-width="2"{dashed}/>'
        )
        if n.terminal:
            out.append(
                f'<rect x="{n.x + 4:.1f}" y="{y0 + 4:.1f}" width="{n.w - 8:.1f}" '
                f'height="{NODE_H - 8}" rx="5" fill="none" stroke="{BRAND}" stroke-width="1.2"/>'
            )
        out.append(_text(n.cx, y0 + 22, n.label, cls="wf-state-label", size=14, weight="700"))
        out.append(
            _text(n.cx, y0 + 39, n.key, cls="wf-state-name", size=11.5, family=MONO, fill=MUTED)
        )
        out.append("</g>")

    # loops: events that leave the case in the state it is in
    for lp in loops:
        n = nodes[lp.src]
        y0 = row_y[n.layer]
        x0 = n.x + n.w
        d = (
            f"M{x0:.1f},{y0 + 14:.1f} C{x0 + LOOP + 6:.1f},{y0 + 2:.1f} "
            f"{x0 + LOOP + 6:.1f},{y0 + NODE_H - 2:.1f} {x0 + 1:.1f},{y0 + NODE_H - 14:.1f}"
        )
        tip = "; ".join(_event_title(name, events[name]) for name in lp.events)
        out.append(
            f'<g class="wf-loop"><title>{escape(tip)}</title><path d="{d}" fill="none" '
            f'stroke="{LINE}" stroke-width="1.6" marker-end="url(#{dom_id}-arrow)"/></g>'
        )
        block = len(lp.events) * LINE_H
        labels.append(_label_box(x0 + LOOP + 10, y0 + NODE_H / 2 - block / 2, lp.events))

    out.extend(labels)  # last, so that no arrow is drawn over a label
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every piece of text in it is escaped above


def _label_box(x: float, top: float, lines: list[str], *, anchor: str = "start") -> str:
    """An arrow's label: event names, one a line, on a white ground so arrows stay clear."""
    width = max(len(s) for s in lines) * 7.3 + 8
    left = x - width / 2 if anchor == "middle" else x - 4
    parts = [
        f'<g class="wf-label"><rect x="{left:.1f}" y="{top - 1:.1f}" width="{width:.1f}" '
        f'height="{len(lines) * LINE_H + 3}" rx="3" fill="#ffffff" fill-opacity="0.92"/>'
    ]
    for i, line in enumerate(lines):
        ty = top + (i + 1) * LINE_H - 3.5
        parts.append(_text(x, ty, line, cls="wf-event", size=12, family=MONO, anchor=anchor))
    parts.append("</g>")
    return "".join(parts)


def _gap_segment(e: Edge, gap: int, nodes, port, row_y):
    """The part of an arrow's curve that crosses the gap below row `gap` (top to bottom)."""
    chain = e.chain
    for i in range(len(chain) - 1):
        a, b = chain[i], chain[i + 1]
        if nodes[a].layer == gap:
            pa = port[(id(e), "top")] if i == 0 else nodes[a].cx
            pb = port[(id(e), "bottom")] if i == len(chain) - 2 else nodes[b].cx
            return (pa, row_y[gap] + NODE_H), (pb, row_y[gap + 1])
    raise AssertionError("an arrow always crosses the gap its label is in")


def _event_title(name: str, ev: dict[str, Any]) -> str:
    who = ", ".join(ev.get("roles") or []) or ("the scheduler" if ev.get("system") else "nobody")
    return f"{name}: {ev.get('label') or name} ({who})"
