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
