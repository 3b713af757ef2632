"""Journal-file storage with heartbeats (Optuna gives heartbeats to RDB storages only)."""

from __future__ import annotations

import functools
import time
from typing import Any


@functools.lru_cache(maxsize=None)
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
