"""The multi-node storage: a real PostgreSQL server (Debian's package, started here on loopback) shared by
concurrent drivers, and a driver killed mid-study on it (RDB heartbeats)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from test_reliability import concurrent_drivers, kill_once_then_resume


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not cands:
        pytest.fail("PostgreSQL server not found: install Debian's postgresql package (.ci/run does: "
                    "apt-get install -y postgresql)")
    return Path(cands[-1]).parent


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="autopeft-pg-"))  # not under pytest's root-only tmp dir: postgres must reach it
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "autopeft", "--no-sync",
                    "-E", "UTF8"], check=True, capture_output=True, cwd=root)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", f"-h 127.0.0.1 -p {port} -k {root} -F",
                    "-l", str(root / "log"), "-w", "start"], check=True, capture_output=True, cwd=root)
    try:
        yield f"postgresql://autopeft@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def _fresh_db(url: str, name: str) -> str:
    import sqlalchemy as sa

    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def test_concurrent_drivers_on_postgresql(pg_url: str, tiny_model: str, glue_dir: Path) -> None:
    concurrent_drivers(tiny_model, glue_dir, _fresh_db(pg_url, "con"), n_drivers=3)


def test_kill9_on_postgresql_then_resume(pg_url: str, tiny_model: str, glue_dir: Path) -> None:
    kill_once_then_resume(tiny_model, glue_dir, _fresh_db(pg_url, "kill"))


def test_a_reader_never_stamps_a_database_a_driver_is_still_creating(pg_url: str) -> None:
    """Found in CI: a reader (`show`, `list`, the kill test's poll) opened a new database while a driver was creating
    Optuna's tables; optuna's RDBStorage stamps version_info/alembic_version even with skip_table_creation, so both
    created alembic_version at once and the driver died on PostgreSQL's duplicate pg_type key. A reader now refuses
    a database whose tables are not all there, and leaves it as it was."""
    import sqlalchemy as sa

    from autopeft.errors import StudyError
    from autopeft.storage import get_storage

    url = _fresh_db(pg_url, "half")
    eng = sa.create_engine(url)
    with eng.begin() as c:  # a driver half-way through creating the schema
        c.execute(sa.text("CREATE TABLE studies (study_id integer primary key, study_name varchar(512))"))
        c.execute(sa.text("CREATE TABLE version_info (version_info_id integer primary key, schema_version integer, "
                          "library_version varchar(256))"))
    with pytest.raises(StudyError, match="holds no Optuna studies"):
        get_storage(url, create=False)
    with eng.connect() as c:
        assert set(sa.inspect(c).get_table_names()) == {"studies", "version_info"}
        assert c.execute(sa.text("SELECT count(*) FROM version_info")).scalar() == 0
    eng.dispose()
    get_storage(url)  # the driver finishes creating it; then readers open it
    assert get_storage(url, create=False) is not None
