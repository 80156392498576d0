"""The referral form, its confirmation, and the referrer's own referrals.

The form only translates HTML's shapes into the JSON body the API takes (`ReferralIn`)
and hands it to the same service, `Referrals.create`, under a hidden per-form key so a
double click refers once. The service validates; this page puts its field errors back
beside the fields, with everything the user typed. "Check the DASH score" scores the
answers with the same rules the engine uses (`referral_engine.policies.assess_dash`) and sends
nothing, so the score is there without JavaScript too.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from referral_engine.access import Actor
from referral_engine.errors import FieldError, Forbidden, InvalidData
from referral_engine.policies import assess_dash
from web import session
from web.pages.base import posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)

PAGE = 20
HOUSEHOLD_ROWS = 3
KEY = re.compile(r"^[A-Za-z0-9-]{8,64}$")

SUBJECT_TEXT = ("given_name", "family_name", "other_names", "gender", "address", "postcode",
                "ethnicity", "language")  # fmt: skip
HOUSEHOLD = ("name", "relationship", "age", "date_of_birth")
# The concerns that show the DASH checklist (app.js shows the section for the same ones).
DASH_CONCERNS = {"domestic_abuse", "honour_based_abuse", "stalking"}
STATUS = {"in_progress": "Being looked at", "decided": "Decided", "closed": "Closed"}

# Friendlier words for what the service says, by field (the service's reason otherwise).
MESSAGES = {
    "subject.given_name": "Enter the person's given name or family name (or both)",
    "concerns": "Choose at least one concern",
    "summary": "Say what has happened and why you are worried",
    "consent": "Say whether the person gave consent, refused it, or was not asked",
    "consent_reason": "Say why consent was refused or not sought",
    "immediate_danger": "Say whether anyone is in immediate danger",
    "dash.rationale": "Give the reasons for your professional judgement",
    "dash.not_completed_reason": "Answer the DASH checklist, or say why it could not be done",
}
LABELS = {
    "pathway": "Where the referral goes",
    "subject.given_name": "Given name",
    "subject.family_name": "Family name",
    "subject.other_names": "Other names",
    "subject.date_of_birth": "Date of birth",
    "subject.estimated_age": "Estimated age",
    "subject.gender": "Gender",
    "subject.address": "Address",
    "subject.postcode": "Postcode",
    "subject.ethnicity": "Ethnicity",
    "subject.language": "Main language",
    "subject.interpreter_needed": "Interpreter",
    "subject.household": "Household",
    "concerns": "Concerns",
    "summary": "What has happened",
    "immediate_danger": "Immediate danger",
    "consent": "Consent",
    "consent_reason": "Reason about consent",
    "fgm_duty": "FGM reporting duty",
    "fgm_duty.reported_to_police": "FGM reported to the police",
    "fgm_duty.reported_on": "Date FGM was reported",
    "victim_aware": "Whether the victim knows",
    "victim_aware_reason": "Why the victim does not know",
    "dash": "DASH checklist",
    "dash.professional_judgement": "Professional judgement",
    "dash.rationale": "Reasons for professional judgement",
    "dash.police_incidents_12m": "Police incidents in the last 12 months",
    "dash.not_completed_reason": "Why the DASH checklist was not done",
    "referrer_contact": "Your contact details",
    "referrer_contact.phone": "Your phone number",
    "referrer_contact.email": "Your email address",
}


def field_id(path: str) -> str:
    """The id of a field's input (the first one of a group), as the error summary links it."""
    return path.replace(".", "-").replace("_", "-")


# --- what the user may do ---------------------------------------------------------------


def referral_pathways(request: Request, actor: Actor) -> list[dict[str, str]]:
    """The pathways this user may refer into: MASH first, then any they may refer straight to."""
    rt = session.runtime(request)
    out = []
    for name, wf in sorted(rt.workflows.current.items(), key=lambda kv: kv[0] != "mash"):
        permission = "referral:referral:create" if name == "mash" else f"{name}:referral:create"
        if rt.access.can(actor, permission):
            d = wf.definition
            out.append({"name": name, "label": d.label, "description": d.description or ""})
    return out


# --- from the form to the body ReferralIn expects ---------------------------------------


def values_of(form: FormData) -> dict[str, Any]:
    """What the user typed, by field name, to put back in the form (lists for checkboxes)."""
    out: dict[str, Any] = {k: str(form.get(k) or "") for k in form}
    out["concerns"] = [str(v) for v in form.getlist("concerns")]
    return out


def _text(values: dict[str, Any], name: str) -> str:
    value = values.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(value: str) -> int | str:
    """A whole number when it is one; otherwise the text, so the service says what is wrong."""
    return int(value) if value.isdigit() else value


def _yes_no(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


def dash_of(values: dict[str, Any], items: tuple[str, ...]) -> dict[str, Any] | None:
    """The DASH part of the body, or None when nothing of it was given."""
    answers = {
        i: values[f"dash-{i}"]
        for i in items
        if values.get(f"dash-{i}") in ("yes", "no", "not_known")
    }
    judgement = values.get("dash_professional_judgement") == "yes"
    rationale = _text(values, "dash_rationale")
    incidents = _text(values, "dash_police_incidents_12m")
    not_done = _text(values, "dash_not_completed_reason")
    if not (answers or judgement or rationale or incidents or not_done):
        return None
    out: dict[str, Any] = {"answers": answers, "professional_judgement": judgement}
    if rationale:
        out["rationale"] = rationale
    if not_done:
        out["not_completed_reason"] = not_done
    if incidents:
        out["police_incidents_12m"] = _number(incidents)
    return out


def body_of(values: dict[str, Any], items: tuple[str, ...]) -> dict[str, Any]:
    """The JSON body of `POST /api/referrals` that the form says, leaving out empty fields."""
    subject: dict[str, Any] = {}
    for name in SUBJECT_TEXT:
        if value := _text(values, f"subject.{name}"):
            subject[name] = value
    if dob := _text(values, "subject.date_of_birth"):
        subject["date_of_birth"] = dob
    if age := _text(values, "subject.estimated_age"):
        subject["estimated_age"] = _number(age)
    if values.get("subject.interpreter_needed") == "yes":
        subject["interpreter_needed"] = True
    household = []
    for i in range(HOUSEHOLD_ROWS):
        row = {k: _text(values, f"subject.household.{i}.{k}") for k in HOUSEHOLD}
        if any(row.values()):
            member: dict[str, Any] = {k: v for k, v in row.items() if v}
            if "age" in member:
                member["age"] = _number(member["age"])
            household.append(member)
    if household:
        subject["household"] = household

    concerns = [c for c in values.get("concerns") or [] if c]
    body: dict[str, Any] = {"subject": subject, "concerns": concerns}
    if pathway := _text(values, "pathway"):
        body["pathway"] = pathway
    if summary := _text(values, "summary"):
        body["summary"] = summary
    danger = _yes_no(_text(values, "immediate_danger"))
    if danger is not None:
        body["immediate_danger"] = danger
    if consent := _text(values, "consent"):
        body["consent"] = consent
    if reason := _text(values, "consent_reason"):
        body["consent_reason"] = reason

    if "female_genital_mutilation" in concerns:
        duty: dict[str, Any] = {}
        reported = _yes_no(_text(values, "fgm_duty.reported_to_police"))
        if reported is not None:
            duty["reported_to_police"] = reported
        if reported_on := _text(values, "fgm_duty.reported_on"):
            duty["reported_on"] = reported_on
        if duty:
            body["fgm_duty"] = duty

    # DASH only where the form shows it (domestic abuse, honour-based abuse, stalking, or a
    # MARAC referral): answers left in a section the user has since hidden are not sent
    # behind their back.
    if DASH_CONCERNS & set(concerns) or body.get("pathway") == "marac":
        if (dash := dash_of(values, items)) is not None:
            body["dash"] = dash
        aware = _yes_no(_text(values, "victim_aware"))
        if aware is not None:
            body["victim_aware"] = aware
        if why := _text(values, "victim_aware_reason"):
            body["victim_aware_reason"] = why

    contact = {k: v for k in ("phone", "email") if (v := _text(values, f"referrer_contact.{k}"))}
    if contact:
        body["referrer_contact"] = contact
    return body


# --- errors, in the form's order, each tied to its field --------------------------------


def known_fields(items: tuple[str, ...]) -> list[str]:
    """Every field that can carry an error, in the order the form shows them."""
    subject = [f"subject.{n}" for n in ("given_name", "family_name", "other_names",
               "date_of_birth", "estimated_age", "gender", "address", "postcode", "ethnicity",
               "language", "interpreter_needed")]  # fmt: skip
    household = [f"subject.household.{i}.{k}" for i in range(HOUSEHOLD_ROWS) for k in HOUSEHOLD]
    return [
        "pathway", *subject, *household, "subject.household", "concerns", "summary",
        "immediate_danger", "consent", "consent_reason", "fgm_duty.reported_to_police",
        "fgm_duty.reported_on", "fgm_duty", "victim_aware", "victim_aware_reason",
        *[f"dash.answers.{i}" for i in items], "dash.professional_judgement", "dash.rationale",
        "dash.police_incidents_12m", "dash.not_completed_reason", "dash",
        "referrer_contact.phone", "referrer_contact.email",
        "referrer_contact",
    ]  # fmt: skip


def _reason(field: str, reason: str) -> str:
    reason = reason.removeprefix("Value error, ")
    missing = reason in ("is required", "must not be blank") or reason.startswith(
        ("List should have at least", "give the subject", "say why", "professional judgement",
         "answer the DASH")
    )  # fmt: skip
    if missing and field in MESSAGES:
        return MESSAGES[field]
    label = LABELS.get(field)
    if label is None and field.startswith("subject.household."):
        _, _, row, key = field.split(".")
        label = f"Household member {int(row) + 1}: {key.replace('_', ' ')}"
        if reason == "is required" and key == "name":
            reason = "is required if you fill in any of that row (or clear the row)"
    elif label is None and field.startswith("dash.answers."):
        label = f"DASH question {field.rsplit('.', 1)[1]}"
    if "valid email address" in reason:
        return "Enter your email address in the form name@example.org"
    if "valid date" in reason:
        reason = "must be a real date"
    elif "valid integer" in reason:
        reason = "must be a whole number"
    if reason.startswith(("is ", "must ")):
        return f"{label or field} {reason}"
    return f"{label or field}: {reason[:1].lower()}{reason[1:]}"


def arrange(errors: list[FieldError], items: tuple[str, ...]) -> list[dict[str, str]]:
    """Each error against the field the form shows it beside, in the form's order."""
    known = known_fields(items)
    out = []
    for e in errors:
        field = "subject.given_name" if e.field == "subject" else e.field
        while field not in known and "." in field:
            field = field.rsplit(".", 1)[0]
        if field.startswith("concerns"):
            field = "concerns"
        if field not in known:
            field = "form"
        out.append({"field": field, "id": field_id(field) if field != "form" else "referral-form",
                    "message": _reason(field, e.reason)})  # fmt: skip
    order = {f: n for n, f in enumerate(known)}
    out.sort(key=lambda e: order.get(e["field"], len(order)))
    return out


# --- the pages --------------------------------------------------------------------------


def _form_page(
    request: Request,
    actor: Actor,
    *,
    values: dict[str, Any] | None = None,
    errors: list[FieldError] | None = None,
    form_key: str | None = None,
    flash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    rt = session.runtime(request)
    pathways = referral_pathways(request, actor)
    if not pathways:
        raise Forbidden("you may not make referrals")
    vocab = rt.policy.reference
    policy = rt.policy.dash
    version_name = policy.version_for(None, actor.agency_kind)
    version = policy.versions[version_name]
    values = dict(values or {})
    values.setdefault("pathway", "mash")
    values.setdefault("concerns", [])
    arranged = arrange(errors or [], version.items)
    errors_at: dict[str, list[str]] = {}
    for e in arranged:
        errors_at.setdefault(e["field"], []).append(e["message"])
    return render(
        request, "referral_new.html",
        {"title": "Refer someone" if not arranged else "Error: refer someone",
         "values": values, "errors": arranged, "errors_at": errors_at,
         "form_key": form_key if form_key and KEY.match(form_key) else uuid.uuid4().hex,
         "pathways": pathways, "concerns": vocab.concerns, "consent_options": vocab.consent,
         "genders": list(rt.policy.reference.genders.items()), "household_rows": HOUSEHOLD_ROWS,
         "fgm_duty_applies": actor.agency_kind in vocab.fgm_duty_agency_kinds,
         "fgm_duty_kinds": vocab.fgm_duty_agency_kinds,
         "dash_version": version, "dash_version_name": version_name,
         "dash_items": [(i, policy.items[i]) for i in version.items],
         "dash_escalation": policy.potential_escalation_incidents,
         "dash_repeat_months": policy.repeat_months,
         "dash_result": score_of(request, actor, values, version.items),
         "criteria_labels": vocab.marac_criteria, "flash": flash, "flash_kind": "warning"},
        actor=actor, status=status,
    )  # fmt: skip


def score_of(
    request: Request, actor: Actor, values: dict[str, Any], items: tuple[str, ...]
) -> dict[str, Any]:
    """The DASH score and the criteria met so far, by the engine's own rules."""
    rt = session.runtime(request)
    dash = dash_of(values, items) or {}
    incidents = dash.get("police_incidents_12m")
    if not isinstance(incidents, int):
        dash["police_incidents_12m"] = None
    result = assess_dash(
        rt.policy.dash, dash, agency_kind=actor.agency_kind, referred_at=rt.clock.now(),
        last_marac_referral=None,
    )  # fmt: skip
    result["text"] = (
        f"DASH score {result['score']} (high risk at {result['threshold']}). Criteria met: "
        + (", ".join(c.replace("_", " ") for c in result["criteria"]) or "none yet")
        + "."
    )
    return result


@router.get("/referrals/new", response_class=HTMLResponse)
def new_referral(request: Request) -> HTMLResponse:
    actor = signed_in(request)
    return _form_page(request, actor)


@router.post("/referrals/new", response_class=HTMLResponse)
async def send_referral(request: Request) -> Response:
    return await posted(request, _send)


def _send(request: Request, actor: Actor, form: FormData) -> Response:
    rt = session.runtime(request)
    values = values_of(form)
    form_key = str(form.get("form_key") or "")
    items = rt.policy.dash.versions[rt.policy.dash.version_for(None, actor.agency_kind)].items
    if form.get("action") == "score":
        return _form_page(request, actor, values=values, form_key=form_key)
    body = body_of(values, items)
    try:
        if "immediate_danger" not in body:
            # The API takes "no" when it is not said; a person filling in a form must say.
            missing = [FieldError("immediate_danger", "is required")]
            try:
                rt.referrals.parse(body, actor)
            except InvalidData as exc:
                missing.extend(exc.errors)
            raise InvalidData(missing)
        created = rt.referrals.create(
            actor.via("web"), body, idempotency_key=form_key if KEY.match(form_key) else None
        )
    except InvalidData as exc:
        errors = list(exc.errors)
        if any(e.field == "Idempotency-Key" for e in exc.errors):
            return _form_page(
                request, actor, values=values, status=409,
                flash="This form was already sent, with different answers. Nothing new has "
                "been sent. Check the answers below, then send them again if you mean to "
                "make a second referral.",
            )  # fmt: skip
        return _form_page(
            request, actor, values=values, errors=errors, form_key=form_key, status=422
        )
    return redirect(f"/referrals/{created['id']}/done")


@router.get("/referrals/{referral_id}/done", response_class=HTMLResponse)
def referral_done(request: Request, referral_id: int) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    referral = rt.referrals.view(actor.via("web"), referral_id)
    return render(
        request, "referral_done.html",
        {"title": "Referral sent", "referral": referral,
         "pathway_label": rt.workflows.get(referral["pathway"]).definition.label},
        actor=actor,
    )  # fmt: skip


@router.get("/referrals", response_class=HTMLResponse)
def my_referrals(request: Request, page: int = 1) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    page = max(page, 1)
    result = rt.referrals.mine(actor.via("web"), limit=PAGE, offset=(page - 1) * PAGE)
    last = max((result["total"] - 1) // PAGE + 1, 1)
    return render(
        request, "referrals.html",
        {"title": "My referrals", "referrals": result, "status_labels": STATUS,
         "page": page, "last": last,
         "can_refer": bool(referral_pathways(request, actor)),
         "prev_url": f"/referrals?{urlencode({'page': page - 1})}" if page > 1 else None,
         "next_url": f"/referrals?{urlencode({'page': page + 1})}" if page < last else None},
        actor=actor,
    )  # fmt: skip


@router.get("/referrals/{referral_id}", response_class=HTMLResponse)
def referral_page(request: Request, referral_id: int) -> HTMLResponse:
    actor = signed_in(request)
    rt = session.runtime(request)
    referral = rt.referrals.view(actor.via("web"), referral_id)
    vocab = rt.policy.reference
    dash = (referral.get("details") or {}).get("dash")
    return render(
        request, "referral.html",
        {"title": f"Referral {referral['reference']}", "referral": referral,
         "full": "case_id" in referral, "status_labels": STATUS,
         "concern_labels": vocab.concerns, "consent_labels": vocab.consent,
         "pathway_label": rt.workflows.get(referral["pathway"]).definition.label,
         "dash_yes": sum(1 for v in (dash or {}).get("answers", {}).values() if v == "yes"),
         "mine": referral.get("referrer_id") in (None, actor.user_id)},
        actor=actor,
    )  # fmt: skip
