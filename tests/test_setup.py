"""Set-up as a newcomer meets it (issue 18): the README answers the first questions, and
the Makefile installs only what each target needs. No database; `make -n` prints what a
target would run without running it, against a virtual environment that does not exist.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from referral_engine.ops.demo import DEMO_USERS
from referral_engine.policies.policy import load_policy
from referral_engine.settings import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
POLICY = load_policy(PROJECT_ROOT / "policies")


def make_dry_run(target: str, venv: Path, *assignments: str) -> list[str]:
    """The commands `make TARGET` would run on a machine with no virtual environment yet."""
    done = subprocess.run(
        ["make", "-n", target, f"VENV={venv}", *assignments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def installs(lines: list[str]) -> list[str]:
    """What each `pip install` line installs."""
    return [
        " ".join(shlex.split(line)[line.split().index("install") + 1 :])
        for line in lines
        if " pip install " in line and "--upgrade pip" not in line
    ]


def readme_demo_table() -> dict[str, str]:
    """username -> role label, from the README's table of demo sign-ins."""
    rows = re.findall(r"^\| ([^|]+?) \| `([^`|]+)` \|", README, flags=re.MULTILINE)
    return {username: role for role, username in rows}


def test_readme_lists_every_demo_account_with_its_role():
    table = readme_demo_table()
    assert set(table) == {u["username"] for u in DEMO_USERS}
    for user in DEMO_USERS:
        label = POLICY.roles[user["roles"][0]].label
        assert table[user["username"]].startswith(label), (user["username"], label)
    assert "safeguarding-demo-2026" in README


def test_readme_says_how_to_pick_another_port_and_it_works(tmp_path):
    assert "make run PORT=8123" in README
    served = [
        line for line in make_dry_run("run", tmp_path / "venv", "PORT=8123") if " serve " in line
    ]
    assert served and served[0].endswith("--port 8123")


def test_readme_says_how_to_run_the_command_line():
    assert ".venv/bin/referral-engine" in README
    assert "source .venv/bin/activate" in README


def test_make_run_installs_only_what_the_product_needs(tmp_path):
    run = installs(make_dry_run("run", tmp_path / "venv"))
    assert run == ["--quiet -e ."], run
    assert not any("dev" in item for item in run)


@pytest.mark.parametrize("target", ["test", "lint", "install"])
def test_test_and_lint_install_the_dev_tools(target, tmp_path):
    assert installs(make_dry_run(target, tmp_path / "venv")) == ["--quiet -e .[dev]"]


def test_ci_runs_lint_and_test_through_make():
    """CI starts from a clean clone: `make lint` and `make test` install the dev extras
    themselves (the test above), so .ci/run must reach them through make."""
    steps = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in steps]
    assert "make lint" in commands
    assert any(c.endswith("make test") for c in commands)
