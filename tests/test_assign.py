"""Assigning a MASH case: a manager gives it to an officer, who is told."""

import pytest
import sqlalchemy as sa

from referral_engine.errors import Forbidden, InvalidData
from referral_engine.storage.models import Case, Outbox


def test_manager_assigns_to_officer_who_is_notified(runtime, refer, fire, staff):
    case_id = refer()["case_id"]
    fire(case_id, "manager", "assign", {"user": "officer"})
    with runtime.db.reading() as s:
        case = s.get(Case, case_id)
        notices = (
            s.execute(sa.select(Outbox.recipient_user_id).where(Outbox.kind == "case_assigned"))
            .scalars()
            .all()
        )
    assert case.assigned_to_id == staff["officer"].user_id
    assert case.state == "received" and case.version == 2
    assert notices == [staff["officer"].user_id]
    mine = runtime.cases.queue(staff["officer"].actor, assigned_to_me=True)
    assert [i["id"] for i in mine["items"]] == [case_id]


def test_only_someone_who_can_work_the_case_can_be_assigned(runtime, refer, fire):
    case_id = refer()["case_id"]
    with pytest.raises(InvalidData) as exc:
        fire(case_id, "manager", "assign", {"user": "teacher"})
    assert exc.value.errors[0].field == "user"
    with pytest.raises(InvalidData) as exc:
        fire(case_id, "manager", "assign", {"user": "nobody"})
    assert "nobody" in exc.value.errors[0].reason


def test_officer_cannot_assign(runtime, refer, fire):
    case_id = refer()["case_id"]
    with pytest.raises(Forbidden):
        fire(case_id, "officer", "assign", {"user": "officer"})
