"""Pathway definitions (workflows/*.yaml) and what their events may name: data schemas,
guards, effects, and the snapshot of a case they decide from."""

from referral_engine.pathways.definitions import (
    Labels,
    Workflow,
    Workflows,
    compile_workflow,
    event_routes,
)

__all__ = ["Labels", "Workflow", "Workflows", "compile_workflow", "event_routes"]
