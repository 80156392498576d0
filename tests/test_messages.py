"""Error messages are sentences that say what to do, declared next to their fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import csrf_of

from referral_engine.errors import InvalidData
from referral_engine.pathways import Workflows
from referral_engine.pathways.eventdata import message_for
from referral_engine.policies import load_policy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workflows():
    return Workflows(ROOT / "workflows", load_policy(ROOT / "policies"))


def test_screening_errors_say_what_to_do(workflows):
    with pytest.raises(InvalidData) as exc:
        workflows.get("mash").schemas["screen"].validate({"rationale": "  "})
    reasons = {e.field: e.reason for e in exc.value.errors}
    assert reasons == {"rag": "Choose a RAG rating", "rationale": "Say why you chose this rating"}
    with pytest.raises(InvalidData) as exc:
        workflows.get("mash").schemas["screen"].validate({"rag": "purple", "rationale": "x"})
    assert [e.reason for e in exc.value.errors] == ["Choose red, amber or green"]


def test_every_fields_message_is_a_sentence_with_no_program_words(workflows):
    for wf in workflows.current.values():
        for event, ev in wf.definition.events.items():
            for name, spec in ev.data.items():
                for kind in ("required", "choice", "invalid", "too_long"):
                    text = message_for(name, spec, kind)
                    where = f"{wf.pathway}.{event}.{name} ({kind}): {text!r}"
                    assert text[:1].isupper(), where
                    assert not re.search(r"\b[a-z]+_[a-z_]+\b", text), where
                    assert "is required" not in text and "literal" not in text, where


def test_the_case_page_shows_the_sentences_and_keeps_what_was_typed(refer, browser_for):
    case_id = refer()["case_id"]
    officer = browser_for("officer")
    page = officer.get(f"/cases/{case_id}").text
    r = officer.post(
        f"/cases/{case_id}/events/screen",
        data={"csrf": csrf_of(page), "expected_version": "1", "rag": "", "rationale": "",
              "note": "Typed before the mistake"},
    )  # fmt: skip
    assert r.status_code == 422
    assert ">Choose a RAG rating</a>" in r.text and ">Say why you chose this rating</a>" in r.text
    assert "is required" not in r.text and "Rag:" not in r.text
    assert "Typed before the mistake" in r.text
