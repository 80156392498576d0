"""The latency figures every benchmark reports, worked out one way."""

from __future__ import annotations

import statistics


def percentiles_ms(seconds: list[float], digits: int = 1) -> dict[str, float]:
    """p50 and p95 of durations in seconds, in milliseconds."""
    q = statistics.quantiles(seconds, n=20, method="inclusive")
    return {
        "p50_ms": round(statistics.median(seconds) * 1e3, digits),
        "p95_ms": round(q[18] * 1e3, digits),
    }
