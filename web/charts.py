"""Charts as inline SVG, drawn on the server: no chart library, no script, nothing fetched.

Each chart is an `<svg role="img">` with a title and a description naming every figure,
so a screen reader hears the data; the pages also give each chart's data as a table.
Colours are SVG presentation attributes (fill, stroke), which the Content Security Policy
allows, not `style` attributes, which it blocks. Every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

INK = "#1d2329"
MUTED = "#505a62"
BAR = "#1d4f76"
TRACK = "#f3f2f1"
GOOD = "#1b6e3a"
SHORT = "#8a5a00"
FONT = '"Segoe UI", Arial, sans-serif'

WIDTH = 420  # the viewBox: about the width a chart is shown at, so text stays its size
LABEL = 20  # a row's label line, above its bar
BAR_HEIGHT = 16
GAP = 12
VALUE_W = 64  # room at the right for the value
MAX_LABEL = 44  # characters of a label shown in the chart (the table has it whole)


def number(value: float | int | None) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def percent(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:.1f}%"


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)].rstrip() + "…"


def _open(
    chart_id: str, title: str, desc: str, width: int, height: int, kind: str = "bars"
) -> list[str]:
    cid = escape(chart_id)
    return [
        f'<svg class="svg-chart svg-{kind}" id="{cid}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{cid}-title {cid}-desc" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="{escape(FONT)}" font-size="14">',
        f'<title id="{cid}-title">{escape(title)}</title>',
        f'<desc id="{cid}-desc">{escape(desc)}</desc>',
    ]


def bar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, int | float]]) -> Markup:
    """A horizontal bar chart: each row's label above its bar, its value at the bar's end,
    bars to one scale (the largest value fills the width)."""
    rows = [(str(label), value or 0) for label, value in rows]
    if not rows:
        parts = _open(chart_id, title, "No data in this period.", WIDTH, 32)
        parts.append(f'<text x="0" y="20" fill="{MUTED}">No data in this period.</text></svg>')
        return Markup("".join(parts))  # noqa: S704 (every text in it was escaped)
    total = sum(v for _, v in rows)
    desc = "; ".join(f"{label}: {number(v)}" for label, v in rows) + "."
    span = WIDTH - VALUE_W
    top = max(v for _, v in rows) or 1
    step = LABEL + BAR_HEIGHT + GAP
    height = len(rows) * step
    parts = _open(chart_id, title, desc, WIDTH, height)
    for i, (label, value) in enumerate(rows):
        y = i * step
        w = max(span * value / top, 3 if value else 0)
        share = f" ({100 * value / total:.0f}%)" if total and len(rows) > 1 else ""
        parts.append(
            f"<g><title>{escape(label)}: {number(value)}{share}</title>"
            f'<text x="0" y="{y + 14}" fill="{INK}">{escape(_clip(label, MAX_LABEL))}</text>'
            f'<rect x="0" y="{y + LABEL}" width="{span}" height="{BAR_HEIGHT}" fill="{TRACK}"/>'
            f'<rect x="0" y="{y + LABEL}" width="{w:.1f}" height="{BAR_HEIGHT}" fill="{BAR}"/>'
            f'<text x="{w + 8:.1f}" y="{y + LABEL + 13}" fill="{INK}" font-weight="700">'
            f"{number(value)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it was escaped)


def meter(chart_id: str, title: str, value: float | None, target: float | None = None) -> Markup:
    """A percentage on a 0-100 scale, with the target marked when there is one: green when
    the target is met, amber when it is not, blue when there is no target."""
    width, height = 320, 66
    left, right, y, bar_h = 2, 318, 18, 18
    span = right - left
    if value is None:
        desc = "No figure for this period."
    else:
        desc = f"{percent(value)}"
        if target is not None:
            met = "meets" if value >= target else "is below"
            desc += f", which {met} the target of {percent(target)}"
        desc += "."
    parts = _open(chart_id, title, desc, width, height, "meter")
    parts.append(f'<rect x="{left}" y="{y}" width="{span}" height="{bar_h}" fill="{TRACK}"/>')
    if value is not None:
        colour = BAR if target is None else (GOOD if value >= target else SHORT)
        w = span * min(max(value, 0), 100) / 100
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
    for tick in (0, 50, 100):
        x = left + span * tick / 100
        anchor = {0: "start", 100: "end"}.get(tick, "middle")
        parts.append(
            f'<text x="{x:.1f}" y="{y + bar_h + 16}" text-anchor="{anchor}" fill="{MUTED}" '
            f'font-size="12">{tick}%</text>'
        )
    if target is not None:
        x = left + span * min(max(target, 0), 100) / 100
        parts.append(
            f'<line x1="{x:.1f}" y1="{y - 8}" x2="{x:.1f}" y2="{y + bar_h + 4}" stroke="{INK}" '
            'stroke-width="3"/>'
        )
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y - 2}" fill="{INK}" font-size="12" font-weight="700">'
            f"Target {percent(target)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it was escaped)


# --- over time: one column per month -----------------------------------------------------

TREND_WIDTH = 480  # about the width a chart card shows it at, so its text stays legible
PLOT_TOP = 12
PLOT_HEIGHT = 160
AXIS = 44  # room under the plot for month and year
LEFT = 40  # room for the scale's numbers
LEGEND_ROW = 22
TARGET = "#1d2329"


def _scale_top(largest: float) -> float:
    """A round number at or above the largest value, so the gridlines read easily."""
    if largest <= 0:
        return 1
    step = 10 ** max(len(str(int(largest))) - 1, 0)
    for nice in (1, 2, 2.5, 5, 10):
        if largest <= nice * step:
            return nice * step
    return 10 * step


def _month_axis(labels: Sequence[str], x_of, width: float) -> list[str]:
    """Month names under their columns; the year under January and the first month. With
    many months, every second or third name, so they never overlap."""
    every = 1 if len(labels) <= 14 else (2 if len(labels) <= 28 else 3)
    parts = []
    base = PLOT_TOP + PLOT_HEIGHT
    for i, text in enumerate(labels):
        month, _, year = text.partition(" ")
        x = x_of(i) + width / 2
        if i % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle" fill="{INK}" '
                f'font-size="12">{escape(month)}</text>'
            )
        if i == 0 or month == "Jan":
            parts.append(
                f'<text x="{x:.1f}" y="{base + 32}" text-anchor="middle" fill="{MUTED}" '
                f'font-size="12">{escape(year)}</text>'
            )
    return parts


def _grid(top: float, fmt) -> list[str]:
    parts = []
    for share in (0, 0.5, 1):
        y = PLOT_TOP + PLOT_HEIGHT * (1 - share)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{TREND_WIDTH}" y2="{y:.1f}" stroke="{TRACK}" '
            'stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}" '
            f'font-size="12">{escape(fmt(top * share))}</text>'
        )
    return parts


def columns(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | int | None],
    *,
    percent_scale: bool = False,
    target: float | None = None,
) -> Markup:
    """One column per month, to one scale (0-100 for a percentage, with the target as a
    line when there is one). A month with no figure has no column and says so."""
    fmt = percent if percent_scale else number
    shown = [v for v in values if v is not None]
    if not labels:
        parts = _open(chart_id, title, "No months in this period.", TREND_WIDTH, 32, "columns")
        parts.append(f'<text x="0" y="20" fill="{MUTED}">No months in this period.</text></svg>')
        return Markup("".join(parts))  # noqa: S704 (every text in it was escaped)
    top = 100.0 if percent_scale else _scale_top(max(shown, default=0))
    desc = "; ".join(
        f"{label}: {'no figure' if v is None else fmt(v)}"
        for label, v in zip(labels, values, strict=True)
    )
    if target is not None:
        desc += f". Target {percent(target)}"
    height = PLOT_TOP + PLOT_HEIGHT + AXIS
    parts = _open(chart_id, title, desc + ".", TREND_WIDTH, height, "columns")
    parts += _grid(top, (lambda v: f"{v:.0f}%") if percent_scale else number)
    slot = (TREND_WIDTH - LEFT) / len(labels)
    width = max(min(slot * 0.7, 48), 2)

    def x_of(i: int) -> float:
        return LEFT + i * slot + (slot - width) / 2

    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            parts.append(f"<g><title>{escape(label)}: no figure</title></g>")
            continue
        h = PLOT_HEIGHT * min(max(value, 0), top) / top
        y = PLOT_TOP + PLOT_HEIGHT - h
        colour = BAR if target is None else (GOOD if value >= target else SHORT)
        parts.append(
            f"<g><title>{escape(label)}: {fmt(value)}</title>"
            f'<rect x="{x_of(i):.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
            f'fill="{colour}"/></g>'
        )
    if target is not None:
        y = PLOT_TOP + PLOT_HEIGHT * (1 - min(max(target, 0), 100) / 100)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{TREND_WIDTH}" y2="{y:.1f}" stroke="{TARGET}" '
            'stroke-width="2" stroke-dasharray="6 4"/>'
        )
    parts += _month_axis(labels, x_of, width)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it was escaped)


def stacked_columns(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[int]]],
) -> Markup:
    """One column per month split into its parts (name, colour, a value a month), with a
    legend naming each colour; white lines between the parts keep them apart."""
    if not labels:
        return columns(chart_id, title, labels, [])
    totals = [sum(values[i] for _, _, values in series) for i in range(len(labels))]
    top = _scale_top(max(totals, default=0))
    desc = "; ".join(
        f"{label}: "
        + (", ".join(f"{name} {number(values[i])}" for name, _, values in series if values[i])
           or "none")
        for i, label in enumerate(labels)
    )  # fmt: skip
    legend_rows = (len(series) + 2) // 3
    height = PLOT_TOP + PLOT_HEIGHT + AXIS + legend_rows * LEGEND_ROW
    parts = _open(chart_id, title, desc + ".", TREND_WIDTH, height, "stacked")
    parts += _grid(top, number)
    slot = (TREND_WIDTH - LEFT) / len(labels)
    width = max(min(slot * 0.7, 48), 2)

    def x_of(i: int) -> float:
        return LEFT + i * slot + (slot - width) / 2

    for i, label in enumerate(labels):
        y = PLOT_TOP + PLOT_HEIGHT
        for name, colour, values in series:
            value = values[i]
            if not value:
                continue
            h = PLOT_HEIGHT * value / top
            y -= h
            parts.append(
                f"<g><title>{escape(label)}, {escape(name)}: {number(value)}</title>"
                f'<rect x="{x_of(i):.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
                f'fill="{colour}" stroke="#ffffff" stroke-width="1"/></g>'
            )
    parts += _month_axis(labels, x_of, width)
    legend_top = PLOT_TOP + PLOT_HEIGHT + AXIS
    column_w = (TREND_WIDTH - LEFT) / 3
    for n, (name, colour, _) in enumerate(series):
        x = LEFT + (n % 3) * column_w
        y = legend_top + (n // 3) * LEGEND_ROW
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="14" height="14" fill="{colour}"/>'
            f'<text x="{x + 20:.1f}" y="{y + 12:.1f}" fill="{INK}" font-size="13">'
            f"{escape(_clip(name, 28))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it was escaped)
