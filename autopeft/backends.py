"""Optuna storage backends from URLs: RDB storages (SQLite, PostgreSQL, ...) with Optuna's heartbeats, and journal
files with ours (Optuna gives heartbeats to RDB storages only).  Part of the storage layer: only
:mod:`autopeft.storage` uses it."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from autopeft.errors import StudyError


HEARTBEAT_ATTR = "autopeft_heartbeat"  # the trial system attribute of a journal heartbeat


def open_storage(url: str, create: bool, heartbeat_s: float, grace_s: float) -> Any:
    """An Optuna storage for ``url`` (RDB with heartbeats, or a journal file ``*.log``/``journal://``)."""
    if not isinstance(url, str) or not url:
        raise StudyError("storage must be a URL such as sqlite:///studies/x.db or postgresql://user@host/db")
    if url.startswith("journal://") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal://"):] if url.startswith("journal://") else url
        p = Path(path)
        if not path:
            raise StudyError("storage journal:// names no file; give one, e.g. journal://studies/big.log")
        if p.is_dir():
            raise StudyError(f"storage {path} is a folder; a journal storage is a file, e.g. {p / 'study.log'}")
        if not create and not p.is_file():
            raise StudyError(f"storage file not found: {path}")
        if p.is_file() and (p.stat().st_size or not create):
            _check_journal(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            return journal_storage_class(heartbeat_s, grace_s, HEARTBEAT_ATTR)(JournalFileBackend(path))
        except OSError as exc:
            raise StudyError(f"cannot open journal storage {path}: {exc.strerror or exc}") from None
        except Exception as exc:  # optuna replays the file's lines: anything else is not a journal
            raise StudyError(f"storage file {path} is not an Optuna journal ({type(exc).__name__}); pass the journal "
                             "file of a study, or a new file name") from None
    if "://" not in url:
        raise StudyError(f"bad storage URL {url[:100]!r}: expected e.g. sqlite:///studies/x.db, postgresql://user@host/db or journal://file.log")
    if url.startswith("sqlite") and not url.startswith("sqlite:///"):
        raise StudyError(f"storage {url[:60]!r} keeps nothing (in-memory SQLite); give a file such as "
                         "sqlite:///studies/x.db")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not create:
            if not path.is_file():
                raise StudyError(f"storage file not found: {path} (no study has been stored there)")
            _check_sqlite_has_studies(path)
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudyError(f"cannot create the folder of storage {path}: {exc.strerror}") from None
    elif not create:
        _check_rdb_has_studies(url)
    last = ""
    for attempt in range(6):  # drivers creating one new database at once race on its schema: retry, then adopt it
        try:
            return rdb_storage_class()(
                url, heartbeat_interval=int(max(1, heartbeat_s)), grace_period=int(max(2, grace_s)),
                engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                skip_table_creation=not create,
            )
        except Exception as exc:  # sqlalchemy raises many types for bad URLs / unreachable servers / schema races
            last = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if not any(k in last for k in ("already exists", "UNIQUE constraint failed", "database is locked",
                                           "duplicate key value violates unique constraint")):
                break
            time.sleep(0.2 * (attempt + 1))
    raise StudyError(f"cannot open storage {url[:200]!r}: {last}")


# Optuna's tables that exist once a storage is fully created: a read-only command opening a storage without them
# would stamp the schema itself (optuna's RDBStorage writes version_info and alembic_version even with
# skip_table_creation) and race a driver that is creating it.
_SCHEMA_TABLES = {"studies", "version_info", "alembic_version"}


def _check_rdb_has_studies(url: str) -> None:
    """A server database a read-only command may open: Optuna's tables are all there (nothing is created here)."""
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(url)
        try:
            with eng.connect() as con:
                names = set(sa.inspect(con).get_table_names())
        finally:
            eng.dispose()
    except Exception as exc:  # bad URL, missing driver, unreachable server: say which, in one line
        last = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"cannot open storage {url[:200]!r}: {last}") from None
    if not _SCHEMA_TABLES <= names:
        raise StudyError(f"storage {url[:200]!r} holds no Optuna studies (yet); check the URL")


def _check_sqlite_has_studies(path: Path) -> None:
    """A file a read-only command may open: an SQLite database with Optuna's tables (never created here)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            ok = _SCHEMA_TABLES <= names
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StudyError(f"storage file {path} is not a readable SQLite database ({exc}); check the path") from None
    if not ok:
        raise StudyError(f"storage file {path} holds no Optuna studies (it is left untouched); check the path")


def _check_journal(p: Path) -> None:
    """Refuse a file that is not an Optuna journal (its first line is a JSON object with an ``op_code``), so no
    command reads it as one and ``search`` never appends to it."""
    import json

    try:
        with p.open("rb") as f:
            first = f.readline(1 << 20)
        ok = isinstance(json.loads(first), dict) and "op_code" in json.loads(first)
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise StudyError(f"storage file {p} is not an Optuna journal (left untouched); pass the journal file of a "
                         "study, or a new file name")


@functools.lru_cache(maxsize=None)
def rdb_storage_class() -> type:
    """Optuna's RDB storage, with one more kind of stale trial: a RUNNING trial that never got a heartbeat (its driver
    died between ``study.ask()`` and the first heartbeat, which it records at once) and started longer than the grace
    period ago.  Optuna skips such trials, so a resumed driver waited for one forever, counting it as another driver's
    (found in the PostgreSQL kill test on a loaded machine).  A live driver beats a trial right after asking for it."""
    from datetime import datetime, timedelta

    import optuna
    from optuna.trial import TrialState

    class HeartbeatRDBStorage(optuna.storages.RDBStorage):
        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = list(super()._get_stale_trial_ids(study_id))
            grace = timedelta(seconds=self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 1))
            now = datetime.now()  # the clock optuna stamps datetime_start with
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                if (t._trial_id not in stale and t.datetime_start is not None and now - t.datetime_start > grace
                        and not self._has_heartbeat(t._trial_id)):
                    stale.append(t._trial_id)
            return stale

        def _has_heartbeat(self, trial_id: int) -> bool:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.scoped_session) as session:
                return models.TrialHeartbeatModel.where_trial_id(trial_id, session) is not None

    return HeartbeatRDBStorage


def journal_storage_class(heartbeat_s: float, grace_s: float, attr: str) -> type:
    """A journal storage with the heartbeats Optuna only gives RDB storages, so a dead driver's running trials
    are told from a live driver's on a shared journal file too.  A heartbeat is the wall-clock time written as a
    trial system attribute (one journal line per running trial every ``heartbeat_s / 2`` s); a RUNNING trial whose
    newest heartbeat (or, before its first, its start) is older than ``grace_s`` is stale.  Machines sharing one
    journal file need clocks that agree to well under ``grace_s`` (NTP does)."""
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, attr, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                last = t.system_attrs.get(attr)
                if last is None and t.datetime_start is not None:
                    last = t.datetime_start.timestamp()
                if last is not None and now - float(last) > grace_s:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return int(max(1, heartbeat_s))

        def get_failed_trial_callback(self) -> Any:
            return None

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return None

    return JournalHeartbeatStorage
