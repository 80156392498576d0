"""Files holding personal data are their owner's only (issue 19): the SQLite database
and its -wal and -shm, backups, subject access and export outputs are created 0600 in
directories created 0700, under the usual umask 022; `sar export` and `export --output`
refuse to overwrite a file or follow a symbolic link, with a clear message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from referral_engine.storage.db import dispose_all, get_engine
from referral_engine.storage.private_files import DIR_MODE, FILE_MODE


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # what a service would have: files 0644 unless made otherwise
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_sqlite_database_and_its_wal_and_shm_are_owner_only(tmp_path):
    path = tmp_path / "var" / "referral_engine.db"
    engine = get_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x TEXT)"))
            conn.execute(sa.text("INSERT INTO t VALUES ('a person')"))
        with engine.connect() as conn:  # the WAL and its index stay while it is open
            conn.execute(sa.text("SELECT * FROM t")).all()
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(f.exists() for f in files), files
            assert {f.name: mode(f) for f in files} == {f.name: FILE_MODE for f in files}
    finally:
        dispose_all()
    assert mode(path.parent) == DIR_MODE


def test_sar_export_is_owner_only_and_never_overwrites_or_follows_a_link(
    cli, runtime, refer, tmp_path
):
    person = refer()["case_id"]
    from referral_engine.storage.models import Case

    with runtime.db.reading() as s:
        person = s.get(Case, person).person_id
    out = tmp_path / "sar" / "request-17"
    r = cli("sar", "export", "--person", str(person), "--output", str(out))
    assert r.returncode == 0, r.stderr
    made = sorted(out.iterdir())
    assert [p.name for p in made] == [f"person-{person}.html", f"person-{person}.json"]
    assert [mode(p) for p in made] == [FILE_MODE, FILE_MODE]
    assert mode(out) == DIR_MODE and mode(out.parent) == DIR_MODE
    before = made[1].read_bytes()
    again = cli("sar", "export", "--person", str(person), "--output", str(out))
    assert again.returncode != 0 and "already there" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr and made[1].read_bytes() == before

    # A link planted where the export will go is refused, and its target is untouched.
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("not yours")
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / f"person-{person}.json").symlink_to(elsewhere)
    r = cli("sar", "export", "--person", str(person), "--output", str(trap))
    assert r.returncode != 0 and "symbolic link" in r.stderr
    assert elsewhere.read_text() == "not yours"
    assert not (trap / f"person-{person}.html").exists()


def test_export_output_is_owner_only_and_never_overwrites_or_follows_a_link(
    cli, runtime, refer, tmp_path
):
    refer()
    out = tmp_path / "cases.csv"
    r = cli("export", "cases", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert mode(out) == FILE_MODE and b"," in out.read_bytes()
    again = cli("export", "cases", "--output", str(out))
    assert again.returncode != 0 and "--output" in again.stderr and "already there" in again.stderr
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "somewhere-else.csv")  # dangling: would be created through
    r = cli("export", "cases", "--output", str(link))
    assert r.returncode != 0 and "symbolic link" in r.stderr
    assert not (tmp_path / "somewhere-else.csv").exists()


def test_a_backup_is_owner_only(cli, runtime, tmp_path):
    target = tmp_path / "backups" / "nightly.db"
    r = cli("db", "backup", str(target))
    if not runtime.settings.is_sqlite:  # PostgreSQL: the command points to pg_dump instead
        assert r.returncode == 2 and "pg_dump" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert mode(target) == FILE_MODE and mode(target.parent) == DIR_MODE
    link = tmp_path / "backups" / "link.db"
    link.symlink_to(tmp_path / "nowhere.db")
    r = cli("db", "backup", str(link))
    assert r.returncode == 2 and "exists" in r.stderr
    assert not (tmp_path / "nowhere.db").exists()
