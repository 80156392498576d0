"""A bad workflow or policy file stops start-up with a DefinitionError naming the file, the
line and the field. Each test takes the real file, breaks one thing, writes the result to
tmp_path, and checks that the error points at the line that was broken.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from referral_engine.errors import DefinitionError
from referral_engine.pathways.definitions import Workflows, compile_workflow
from referral_engine.policies.policy import load_policy
from referral_engine.settings import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / "workflows"
POLICIES = PROJECT_ROOT / "policies"


@pytest.fixture(scope="module")
def policy():
    return load_policy(POLICIES)


@pytest.fixture(scope="module")
def mash_source() -> str:
    return (WORKFLOWS / "mash.yaml").read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    """The 1-based line on which `needle` (which must occur exactly once) starts."""
    assert text.count(needle) == 1, f"{needle!r} occurs {text.count(needle)} times"
    return text[: text.index(needle)].count("\n") + 1


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the original"
    return text.replace(old, new)


def assert_names(err: DefinitionError, path: Path | str, line: int, field: str) -> None:
    message = str(err)
    assert f"{path}:{line}:" in message, message
    assert err.line == line, message
    assert field in message, message
    assert err.field == field, message


def compile_broken(tmp_path: Path, policy, source: str, name: str = "mash.yaml"):
    path = tmp_path / "workflows" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(source, encoding="utf-8")
    with pytest.raises(DefinitionError) as exc:
        compile_workflow(source, str(path), policy)
    return path, exc.value


# --- workflows -------------------------------------------------------------------------


def test_the_untouched_definitions_load(tmp_path, policy, mash_source):
    """The baseline: every failure below comes from the one thing each test breaks."""
    path = tmp_path / "mash.yaml"
    path.write_text(mash_source, encoding="utf-8")
    wf = compile_workflow(mash_source, str(path), policy)
    assert wf.pathway == "mash" and "screen" in wf.definition.events


def test_unknown_state_in_to(tmp_path, policy, mash_source):
    broken = edit(mash_source, "    to: screening\n", "    to: screned\n")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(err, path, line_of(broken, "    to: screned"), "events.screen.to")
    assert "screned" in str(err)


def test_unknown_state_in_from(tmp_path, policy, mash_source):
    broken = edit(mash_source, "    from: [received]\n", "    from: [recieved]\n")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(err, path, line_of(broken, "from: [recieved]"), "events.screen.from.0")
    assert "recieved" in str(err)


def test_initial_must_be_a_state(tmp_path, policy, mash_source):
    broken = edit(mash_source, "initial: received\n", "initial: arrived\n")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(err, path, line_of(broken, "initial: arrived"), "initial")


def test_unknown_effect(tmp_path, policy, mash_source):
    broken = edit(mash_source, "- set_rag: {field: rag}", "- set_ragg: {field: rag}")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(err, path, line_of(broken, "- set_ragg:"), "events.screen.effects.0")
    assert "set_ragg" in str(err)


def test_unknown_guard(tmp_path, policy, mash_source):
    broken = edit(mash_source, "- outcome_fits_age:", "- outcome_fits_ages:")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(err, path, line_of(broken, "- outcome_fits_ages:"), "events.decide.guards.0")
    assert "outcome_fits_ages" in str(err)


def test_bad_guard_params(tmp_path, policy, mash_source):
    broken = edit(
        mash_source,
        "adult_only: [adult_safeguarding_enquiry]",
        "adults_only: [adult_safeguarding_enquiry]",
    )
    path, err = compile_broken(tmp_path, policy, broken)
    assert err.field.startswith("events.decide.guards.0"), str(err)
    assert f"{path}:" in str(err)
    # The parameters belong to the guard on the line below its name, or that line itself.
    assert err.line in (line_of(broken, "- outcome_fits_age:"), line_of(broken, "adults_only:"))


def test_effect_with_an_unknown_parameter(tmp_path, policy, mash_source):
    broken = edit(mash_source, "- set_rag: {field: rag}", "- set_rag: {feild: rag}")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(
        err,
        path,
        line_of(broken, "- set_rag: {feild: rag}"),
        "events.screen.effects.0.set_rag.feild",
    )


def test_effect_with_a_parameter_of_the_wrong_type(tmp_path, policy, mash_source):
    old = "sla: mash_decision_red, start: received, earlier_only: true,"
    broken = edit(mash_source, old, old.replace("earlier_only: true", "earlier_only: sometimes"))
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(
        err, path, line_of(broken, "earlier_only: sometimes"),
        "events.screen.effects.2.set_deadline.earlier_only",
    )  # fmt: skip


def test_effect_missing_a_required_parameter(tmp_path, policy, mash_source):
    broken = edit(
        mash_source,
        "          attribute: checks\n",
        "",
    )
    path, err = compile_broken(tmp_path, policy, broken)
    # A missing parameter is reported on the effect that lacks it (record_check's first).
    first = broken.index("- append_attribute:", broken.index("record_check:"))
    assert f"{path}:{broken.count(chr(10), 0, first) + 1}:" in str(err)
    assert "attribute" in err.field and err.field.startswith("events.record_check.effects.0")


def test_unknown_sla_name(tmp_path, policy, mash_source):
    broken = edit(mash_source, "sla: mash_decision_red,", "sla: mash_decision_rde,")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(
        err, path, line_of(broken, "sla: mash_decision_rde"),
        "events.screen.effects.2.set_deadline.sla",
    )  # fmt: skip
    assert "mash_decision_rde" in str(err)


def test_unknown_sla_in_on_open(tmp_path, policy, mash_source):
    broken = edit(mash_source, "sla: mash_decision, start", "sla: mash_decisions, start")
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(err, path, line_of(broken, "sla: mash_decisions"), "on_open.0.set_deadline.sla")


def test_unknown_vocabulary(tmp_path, policy, mash_source):
    broken = edit(
        mash_source,
        "type: choice, choices_from: mash_outcomes",
        "type: choice, choices_from: mash_outcome",
    )
    path, err = compile_broken(tmp_path, policy, broken)
    assert_names(
        err, path, line_of(broken, "choices_from: mash_outcome,"),
        "events.decide.data.outcome.choices_from",
    )  # fmt: skip


def test_yaml_syntax_error(tmp_path, policy, mash_source):
    broken = edit(mash_source, "    to: screening\n", "    to: screening: now\n")
    path, err = compile_broken(tmp_path, policy, broken)
    assert f"{path}:{line_of(broken, 'to: screening: now')}:" in str(err)
    assert err.line == line_of(broken, "to: screening: now")


def test_duplicate_key(tmp_path, policy, mash_source):
    broken = edit(
        mash_source,
        "    label: Screen and RAG-rate\n",
        "    label: Screen and RAG-rate\n    label: Screen again\n",
    )
    path, err = compile_broken(tmp_path, policy, broken)
    line = line_of(broken, "    label: Screen again")
    assert f"{path}:{line}:" in str(err), str(err)  # names the file, not just the line
    assert err.path == str(path)
    assert err.line == line
    assert "label" in err.field and "duplicate" in str(err)


def test_missing_initial(tmp_path, policy, mash_source):
    broken = edit(mash_source, "initial: received\n", "")
    path, err = compile_broken(tmp_path, policy, broken)
    assert err.field == "initial", str(err)
    assert f"{path}:" in str(err)
    # A missing key is reported where it belongs: the top-level mapping, which starts
    # at the first key of the file.
    assert err.line == line_of(broken, "pathway: mash")


def test_pathway_must_match_the_file_name(tmp_path, policy, mash_source):
    path, err = compile_broken(tmp_path, policy, mash_source, name="front_door.yaml")
    assert_names(err, path, line_of(mash_source, "pathway: mash"), "pathway")
    assert "front_door" in str(err)


def test_an_empty_file(tmp_path, policy):
    path, err = compile_broken(tmp_path, policy, "# nothing here\n")
    assert f"{path}:" in str(err)


def test_loading_a_directory_names_the_bad_file(tmp_path, policy, mash_source):
    directory = tmp_path / "workflows"
    directory.mkdir()
    broken = edit(mash_source, "    to: screening\n", "    to: screned\n")
    (directory / "mash.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(DefinitionError) as exc:
        Workflows(directory, policy)
    assert_names(
        exc.value, directory / "mash.yaml", line_of(broken, "    to: screned"), "events.screen.to"
    )


# --- policies --------------------------------------------------------------------------


def broken_policies(tmp_path: Path, file: str, old: str, new: str) -> tuple[Path, str]:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    path = directory / file
    text = edit(path.read_text(encoding="utf-8"), old, new)
    path.write_text(text, encoding="utf-8")
    return path, text


def load_broken(directory: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as exc:
        load_policy(directory)
    return exc.value


def test_the_untouched_policies_load(tmp_path):
    shutil.copytree(POLICIES, tmp_path / "policies")
    policy = load_policy(tmp_path / "policies")
    assert "mash_manager" in policy.roles


def test_unknown_role_in_includes(tmp_path):
    path, text = broken_policies(
        tmp_path, "roles.yaml", "includes: [mash_officer]", "includes: [mash_offcer]"
    )
    err = load_broken(path.parent)
    assert "mash_offcer" in str(err)
    assert_names(err, path, line_of(text, "includes: [mash_offcer]"), "roles.mash_manager.includes")


def test_bad_permission_string(tmp_path):
    path, text = broken_policies(
        tmp_path, "roles.yaml", "      - mash:case:decide\n", "      - mash:case\n"
    )
    err = load_broken(path.parent)
    assert "mash:case" in str(err)
    assert f"{path}:{line_of(text, '      - mash:case' + chr(10))}:" in str(err)
    assert err.field.startswith("roles.mash_manager.grants.")


def test_bad_permission_string_in_the_long_form(tmp_path):
    path, text = broken_policies(
        tmp_path, "roles.yaml",
        "      - permission: marac:referral:create\n        when_agency_kind: [police]",
        "      - permission: marac::create\n        when_agency_kind: [police]",
    )  # fmt: skip
    err = load_broken(path.parent)
    assert "marac::create" in str(err)
    assert f"{path}:{line_of(text, 'permission: marac::create')}:" in str(err)
    assert err.field.startswith("roles.practitioner.grants.")
    assert err.field.endswith("permission")


def test_unknown_agency_kind(tmp_path):
    path, text = broken_policies(
        tmp_path, "roles.yaml", "when_agency_kind: [police]", "when_agency_kind: [polise]"
    )
    err = load_broken(path.parent)
    assert "polise" in str(err)
    assert f"{path}:{line_of(text, 'when_agency_kind: [polise]')}:" in str(err)
    assert err.field.endswith("when_agency_kind")


def test_sla_with_two_units(tmp_path):
    path, text = broken_policies(
        tmp_path, "sla.yaml", "    hours: 4\n", "    hours: 4\n    working_days: 1\n"
    )
    err = load_broken(path.parent)
    assert_names(err, path, line_of(text, "  mash_decision_red:"), "sla.mash_decision_red")


def test_negative_sla(tmp_path):
    path, text = broken_policies(tmp_path, "sla.yaml", "    hours: 4\n", "    hours: -4\n")
    err = load_broken(path.parent)
    assert_names(err, path, line_of(text, "hours: -4"), "sla.mash_decision_red.hours")


def test_policy_yaml_syntax_error(tmp_path):
    path, text = broken_policies(
        tmp_path, "sla.yaml", "    label: MASH decision\n", "    label: MASH: decision\n"
    )
    err = load_broken(path.parent)
    assert f"{path}:{line_of(text, 'label: MASH: decision')}:" in str(err)


def test_policy_duplicate_key(tmp_path):
    path, text = broken_policies(
        tmp_path, "roles.yaml", "  mash_manager:\n    label: MASH manager\n",
        "  mash_manager:\n    label: MASH manager\n    label: Team manager\n",
    )  # fmt: skip
    err = load_broken(path.parent)
    assert f"{path}:{line_of(text, 'label: Team manager')}:" in str(err)
    assert "label" in err.field


def test_missing_rule(tmp_path):
    path, _ = broken_policies(
        tmp_path, "rules.yaml", "due_soon_hours: 2 ", "# due_soon_hours: removed "
    )
    err = load_broken(path.parent)
    assert err.field == "due_soon_hours", str(err)
    assert f"{path}:" in str(err) and err.line is not None


# --- the measures (policies/reports.yaml) ------------------------------------------------


def _measures(workflows_dir: Path, policies_dir: Path):
    from referral_engine.reports.measures import load_measures

    policy = load_policy(policies_dir)
    workflows = Workflows(workflows_dir, policy)
    return load_measures(policies_dir, workflows, {"mash", *policy.reference.onward_pathways})


def test_the_untouched_measures_load():
    defs = _measures(WORKFLOWS, POLICIES)
    assert {"marac_cases", "mash_decided_within_1wd_pct", "channel_adoption_pct"} <= set(
        defs.measures
    )


def test_renaming_an_event_a_kpi_counts_stops_start_up_naming_it(tmp_path):
    """Rename MARAC's `accept` in a copy of workflows/: the KPIs that count accepted cases
    would silently become 0, so loading stops instead, naming reports.yaml, the line and
    the field."""
    workflows = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, workflows)
    marac = workflows / "marac.yaml"
    marac.write_text(marac.read_text().replace("  accept:\n", "  admit:\n", 1))
    with pytest.raises(DefinitionError) as err:
        _measures(workflows, POLICIES)
    text = (POLICIES / "reports.yaml").read_text().splitlines()
    assert err.value.path.endswith("reports.yaml")
    assert err.value.field == "measures.marac_cases.cases.reached.0"
    assert "accept" in text[err.value.line - 1] and "no event 'accept'" in err.value.reason


def test_a_measure_naming_what_no_pathway_has_stops_start_up(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    reports = policies / "reports.yaml"
    source = reports.read_text()
    for old, new, field in (
        ("deadline_met: decision", "deadline_met: decison", "measures.mash_decisions.deadline_met"),
        ("by_attribute: exploitation_types", "by_attribute: exploitation",
         "measures.nrm_by_exploitation_type.by_attribute"),
        ("pathway: gang_exit", "pathway: gangs", "measures.gang_exit_completions.pathway"),
        ("cases: marac_cases", "cases: marac_case", "returns.marac.cases"),
    ):  # fmt: skip
        reports.write_text(source.replace(old, new, 1))
        with pytest.raises(DefinitionError) as err:
            _measures(WORKFLOWS, policies)
        assert err.value.field == field, err.value
        assert new.split(": ")[1] in reports.read_text().splitlines()[err.value.line - 1]
