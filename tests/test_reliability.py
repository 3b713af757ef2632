"""Nothing is lost: kill -9 mid-study and resume, concurrent drivers on one study, failing trials."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from autopeft.cli import main

FID_KW = dict(n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16)
FID = ["--n-train", "32", "--n-eval", "32", "--epochs", "1", "--max-length", "24", "--batch-size", "16"]


def _cmd(tiny_model: str, glue_dir: Path, storage: str, trials: int, study: str = "rel", workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "autopeft.cli", "search", "--model", tiny_model, "--data-dir", str(glue_dir), "--space",
            "tiny", "--trials", str(trials), "--study", study, "--storage", storage, "--workers", str(workers),
            "--n-startup", "3", "--no-progress", "--no-collapse-stop", *FID]  # these tiny trials mostly sit at the
    # majority-class level: the tests are about kills and races, so the budget is run (the stop has its own test)


def _env() -> dict[str, str]:
    return {**os.environ, "AUTOPEFT_HEARTBEAT_S": "1", "AUTOPEFT_GRACE_S": "3", "PYTHONUNBUFFERED": "1"}


def create_study(tiny_model: str, glue_dir: Path, storage: str, trials: int, study: str) -> None:
    """The study that ``_cmd`` would create with ``trials`` complete, made in this process (inline executor, same
    options): a test whose point is what later drivers do saves a driver's and a worker's interpreter start."""
    from autopeft import api

    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=trials,
                     study_name=study, storage=storage, executor="inline", n_startup=3, collapse_stop=False, **FID_KW)
    assert len(res.study.get_trials(states=(TrialState.COMPLETE,))) == trials


def _snapshot(storage: str, study: str = "rel") -> dict[int, list[float]]:
    try:
        s = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return {}
    return {t.number: list(t.values) for t in s.get_trials(states=(TrialState.COMPLETE,))}


def _cmdline(p: "psutil.Process") -> str:
    """A process's command line, or "" for one that exited meanwhile (a zombie not yet reaped: already dead)."""
    try:
        return " ".join(p.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def test_kill9_at_random_points_then_resume_loses_nothing(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'rel.db'}"
    rng = random.Random(7)
    target = 12
    kept: dict[int, list[float]] = {}
    kills = 0
    for round_ in range(3):
        start_n = len(_snapshot(storage))
        proc = subprocess.Popen(_cmd(tiny_model, glue_dir, storage, target, workers=2), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while len(_snapshot(storage)) <= start_n and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)  # wait until this driver has completed a trial: it is mid-study now
        time.sleep(rng.uniform(0.0, 1.5))  # then kill at a random point: during a trial or a storage write
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)
                    if "multiprocessing.spawn" in _cmdline(c)] if proc.poll() is None else []
        if proc.poll() is None:
            before = _snapshot(storage)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            deadline = time.monotonic() + 10
            while True:  # workers get SIGKILL from the kernel when their parent dies (PR_SET_PDEATHSIG)
                alive = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
                if not alive or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert not alive, f"orphan workers kept running: {alive}"
            after = _snapshot(storage)
            for n, v in before.items():
                assert after[n] == v  # completed before the kill: kept as it was
        kept.update(_snapshot(storage))
    assert kills >= 2
    time.sleep(3.5)  # let the killed drivers' heartbeats go stale
    assert subprocess.run(_cmd(tiny_model, glue_dir, storage, target, workers=2), env=_env(),
                          capture_output=True, timeout=300).returncode == 0
    final = optuna.load_study(study_name="rel", storage=storage)
    done = {t.number: list(t.values) for t in final.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) == target
    for n, v in kept.items():
        assert done[n] == v
    # the trials the kills interrupted are marked failed (stale heartbeat), none stays RUNNING
    assert not final.get_trials(states=(TrialState.RUNNING,))
    keys = [t.user_attrs["candidate_key"] for t in final.get_trials(states=(TrialState.COMPLETE,))]
    assert len(keys) == len(set(keys))


def concurrent_drivers(tiny_model: str, glue_dir: Path, storage: str, n_drivers: int = 3) -> None:
    """Several drivers on one study: no duplicates, no lost writes, no lock errors, no live trial failed."""
    from autopeft.storage import get_storage

    create_study(tiny_model, glue_dir, storage, 1, "con")  # created first so all drivers resume the same one
    procs = [subprocess.Popen(_cmd(tiny_model, glue_dir, storage, 6, study="con"), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(n_drivers)]
    errs = [p.communicate(timeout=400)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert not any("database is locked" in e for e in errs)
    s = optuna.load_study(study_name="con", storage=get_storage(storage, create=False))
    comp = s.get_trials(states=(TrialState.COMPLETE,))
    assert 6 <= len(comp) <= 6 + n_drivers - 1  # each driver stops at 6; at most one in flight each may land beyond
    keys = [t.user_attrs["candidate_key"] for t in comp]
    assert len(keys) == len(set(keys))
    assert not s.get_trials(states=(TrialState.RUNNING,))  # no live driver's trial was failed, none left running
    assert not [t for t in s.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get("status") == "abandoned"]


def test_failing_trials_are_recorded_and_search_goes_on(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    from autopeft import api

    storage = f"sqlite:///{tmp_path / 'f.db'}"
    faults = {1: "raise", 2: "nan", 4: "exit"}
    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=4, study_name="f",
                     storage=storage, workers=1, executor="local", n_startup=2, **FID_KW, fault=lambda n: faults.get(n))
    trials = res.study.get_trials()
    reasons = {t.number: t.user_attrs.get("reason") for t in trials if t.state == TrialState.FAIL}
    assert "RuntimeError: injected fault" in reasons[1]
    assert reasons[2].startswith("NaN loss")
    assert "worker process died (exit code 3)" in reasons[4]
    assert len(res.study.get_trials(states=(TrialState.COMPLETE,))) == 4
    failed_keys = {t.user_attrs["candidate_key"] for t in trials if t.state == TrialState.FAIL}
    later = [t.user_attrs["candidate_key"] for t in trials if t.number > 4]
    assert not failed_keys & set(later)  # a failing candidate is not proposed again


def test_every_trial_failing_stops_with_exit_1(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft import api
    from autopeft.loop import TrialsFailing

    storage = f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(TrialsFailing, match="3 trials failed in a row; last reason: RuntimeError: injected fault"):
        api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=10, study_name="allfail",
                   storage=storage, executor="inline", max_failures=3, **FID_KW, fault=lambda n: "raise")
    assert len(api.load_study("allfail", storage).study.get_trials(states=(TrialState.FAIL,))) == 3


def test_trial_timeout(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    from autopeft import api

    t0 = time.monotonic()
    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=2, study_name="to",
                     storage=f"sqlite:///{tmp_path / 't.db'}", executor="local", workers=1, trial_timeout=5.0, **FID_KW,
                     fault=lambda n: "sleep:600" if n == 0 else None)
    # the hung trial would hold the search 600 s; with the timeout it returns in well under half that (about 20 s
    # idle; a wide bound, since a loaded machine slows the other trial and start-up, session 32 saw 52 s)
    assert time.monotonic() - t0 < 300
    t = res.study.trials[0]
    assert t.state == TrialState.FAIL and "exceeded the per-trial timeout of 5 s" in t.user_attrs["reason"]


def test_incompatible_study_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    s = optuna.create_study(study_name="old", storage=url)
    s.set_user_attr("autopeft_schema", 99)
    assert main(["show", "--study", "old", "--storage", url]) == 2
    assert "schema 99" in capsys.readouterr().err
    s2 = optuna.create_study(study_name="broken", storage=url)
    s2.set_user_attr("autopeft_schema", 1)
    assert main(["show", "--study", "broken", "--storage", url]) == 2
    assert "lacks the attribute 'model'" in capsys.readouterr().err
    optuna.create_study(study_name="plain", storage=url)
    assert main(["best", "--study", "plain", "--storage", url]) == 2
    assert "not written by autopeft" in capsys.readouterr().err


def test_journal_storage_shared_by_concurrent_drivers(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """The multi-node storage: one journal file (on a shared file system for several machines)."""
    url = f"journal://{tmp_path / 'shared' / 'study.log'}"
    procs = [subprocess.Popen(_cmd(tiny_model, glue_dir, url, 6, study="j"), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=400)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    from autopeft.storage import get_storage

    s = optuna.load_study(study_name="j", storage=get_storage(url, create=False))
    comp = s.get_trials(states=(TrialState.COMPLETE,))
    assert 6 <= len(comp) <= 8
    keys = [t.user_attrs["candidate_key"] for t in comp]
    assert len(keys) == len(set(keys))
    assert main(["show", "--study", "j", "--storage", url]) == 0


def test_journal_heartbeats_tell_dead_trials_from_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal storage gets heartbeats too: a trial whose heartbeat stopped is stale, a beating one is not."""
    from autopeft import storage as study_mod
    from autopeft.contract import ABANDONED
    from autopeft.storage import fail_stale, get_storage

    monkeypatch.setattr(study_mod, "GRACE_S", 0.6)
    storage = get_storage(f"journal://{tmp_path / 'hb.log'}")
    s = optuna.create_study(study_name="hb", storage=storage)
    dead, live = s.ask(), s.ask()
    storage.record_heartbeat(dead._trial_id)
    assert fail_stale(s) == []  # both fresh
    for _ in range(4):
        time.sleep(0.25)
        storage.record_heartbeat(live._trial_id)
    assert fail_stale(s) == [dead._trial_id]
    reread = optuna.load_study(study_name="hb", storage=get_storage(f"journal://{tmp_path / 'hb.log'}", create=False))
    states = {t.number: t.state for t in reread.get_trials()}
    assert states == {dead.number: TrialState.FAIL, live.number: TrialState.RUNNING}
    assert reread.trials[dead.number].user_attrs["status"] == ABANDONED


def kill_once_then_resume(tiny_model: str, glue_dir: Path, url: str) -> None:
    """kill -9 a driver mid-study; once its heartbeats are stale, a rerun marks its trials abandoned and finishes."""
    from autopeft.storage import get_storage

    def snap() -> dict[int, list[float]]:
        try:
            st = optuna.load_study(study_name="jk", storage=get_storage(url, create=False))
        except Exception:
            return {}
        return {t.number: list(t.values) for t in st.get_trials(states=(TrialState.COMPLETE,))}

    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(_cmd(tiny_model, glue_dir, url, 6, study="jk", workers=2), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 90
    while len(snap()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        err.seek(0)
        pytest.fail(f"the driver ended (exit {proc.returncode}) before it could be killed: {err.read()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = snap()
    st = optuna.load_study(study_name="jk", storage=get_storage(url, create=False))
    assert st.get_trials(states=(TrialState.RUNNING,))  # the killed driver's trials, left running
    time.sleep(3.5)  # their heartbeats go stale
    rerun = subprocess.run(_cmd(tiny_model, glue_dir, url, 6, study="jk", workers=2), env=_env(), capture_output=True,
                           text=True, timeout=300)  # a hang (a RUNNING trial never found stale) fails, not blocks
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    final = optuna.load_study(study_name="jk", storage=get_storage(url, create=False))
    assert not final.get_trials(states=(TrialState.RUNNING,))
    assert any(t.user_attrs.get("status") == "abandoned" for t in final.get_trials(states=(TrialState.FAIL,)))
    done = {t.number: list(t.values) for t in final.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) == 6 and all(done[n] == v for n, v in before.items())


def test_a_busy_driver_keeps_its_trials_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats come from a thread: a driver stuck for longer than the grace period (a slow sampler fit on a loaded
    machine) is not taken for dead by another driver; once it stops beating, its trial is stale."""
    from autopeft import storage as study_mod
    from autopeft.proposer import Proposer
    from autopeft.storage import StudyStore, fail_stale, get_storage

    monkeypatch.setattr(study_mod, "GRACE_S", 0.6)
    url = f"journal://{tmp_path / 'busy.log'}"
    s = optuna.create_study(study_name="busy", storage=get_storage(url))
    store = StudyStore("busy", url)
    store.study = s
    prop = Proposer(store, None, lambda c: 0, 1, {}, {})
    trial = s.ask()
    prop.pending[trial.number] = (trial, None, time.monotonic())
    other = optuna.load_study(study_name="busy", storage=get_storage(url, create=False))  # another driver
    with prop.heartbeats(0.1):
        time.sleep(1.5)  # the main thread is busy for 2.5 grace periods
        assert fail_stale(other) == []
    time.sleep(1.0)  # now it has stopped beating
    assert fail_stale(other) == [trial._trial_id]


def test_a_trial_being_prepared_is_kept_alive_and_one_failed_meanwhile_is_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler's fit happens after ``ask`` and before the trial is in flight: the heartbeat thread beats it too
    (CI: 3 drivers on 2 cores, a fit outlasted the grace period and another driver failed the live trial, whose
    driver then stopped on "Trial#N has already finished and can not be updated").  A trial failed meanwhile anyway
    (a stall past the grace period) is dropped, and the driver asks again instead of stopping."""
    from autopeft import storage as study_mod
    from autopeft.candidate import Candidate
    from autopeft.proposer import Proposer
    from autopeft.storage import StudyStore, fail_stale, get_storage

    monkeypatch.setattr(study_mod, "GRACE_S", 0.6)
    url = f"journal://{tmp_path / 'prep.log'}"
    s = optuna.create_study(study_name="prep", storage=get_storage(url))
    store = StudyStore("prep", url)
    store.study, store.max_params = s, None
    other = optuna.load_study(study_name="prep", storage=get_storage(url, create=False))  # another driver

    class SlowBound:
        def __init__(self, fail_it: bool) -> None:
            self.fail_it = fail_it

        def suggest(self, trial: optuna.Trial) -> Candidate:
            time.sleep(1.5)  # a slow sampler fit: 2.5 grace periods
            if self.fail_it:
                s._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # another driver got there
            else:
                assert fail_stale(other) == []
            trial.suggest_int("x", 0, 3)
            return Candidate.make({"lora": {"r": 4}}, [0])

    prop = Proposer(store, SlowBound(False), lambda c: 10, 100, {"model": "m", "data": {}}, {})
    with prop.heartbeats(0.1):
        spec = prop.ask()
    assert spec is not None and spec.trial_id in prop.pending
    assert s.get_trials()[0].state == TrialState.RUNNING
    prop.bound = SlowBound(True)
    with prop.heartbeats(0.1):
        assert prop.ask() is None  # no exception: the lost proposal is dropped
    assert len(prop.pending) == 1 and s.get_trials()[1].state == TrialState.FAIL


def test_a_result_whose_trial_was_failed_as_stale_is_kept(tmp_path: Path) -> None:
    """If another driver failed a trial as stale while it was still training, its result is stored as a new trial
    (not lost, no storage error); if the candidate has a complete trial by then, nothing is added."""
    from autopeft.contract import OK, TrialResult
    from autopeft.storage import A, StudyStore, get_storage

    url = f"sqlite:///{tmp_path / 'late.db'}"
    s = optuna.create_study(study_name="late", storage=get_storage(url), directions=["maximize", "minimize"])
    store = StudyStore("late", url)
    store.study, store.objectives = s, ["score", "params"]
    trials = []
    for key in ("k1", "k2"):
        t = s.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.set_user_attr(A.CANDIDATE_KEY, key)
        s._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # failed as stale by another driver
        trials.append(t)
    store.record(trials[0], TrialResult(trials[0].number, OK, score=0.7, params=120, memory_bytes=2**21, wall_s=1.5))
    done = s.get_trials(states=(TrialState.COMPLETE,))
    assert [(t.values, t.user_attrs[A.CANDIDATE_KEY], t.user_attrs[A.MEMORY_MIB]) for t in done] == [([0.7, 120.0], "k1", 2.0)]
    assert done[0].params == trials[0].params and "failed as stale" in done[0].user_attrs[A.REASON]
    # the same candidate again (another driver trained it meanwhile): kept once
    store.record(trials[0], TrialResult(trials[0].number, OK, score=0.6, params=120, memory_bytes=2**21, wall_s=1.5))
    assert len(s.get_trials(states=(TrialState.COMPLETE,))) == 1
    # failed between its result's attributes and the tell: study.tell refuses ("Cannot tell a FAIL trial"); kept too
    t = s.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    t.set_user_attr(A.CANDIDATE_KEY, "k3")
    real_tell = s.tell

    def tell_after_stale(trial: optuna.Trial, *a: object, **k: object) -> object:
        s._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return real_tell(trial, *a, **k)

    s.tell = tell_after_stale  # type: ignore[method-assign]
    store.record(t, TrialResult(t.number, OK, score=0.5, params=90, memory_bytes=2**21, wall_s=1.0))
    assert sorted(tr.values[0] for tr in s.get_trials(states=(TrialState.COMPLETE,))) == [0.5, 0.7]


def test_kill9_on_journal_storage_then_resume(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    kill_once_then_resume(tiny_model, glue_dir, f"journal://{tmp_path / 'kill.log'}")


def test_a_trial_asked_but_never_beaten_is_stale_after_the_grace_period(tmp_path: Path) -> None:
    """A driver killed between ``study.ask()`` and its first heartbeat left a RUNNING trial that Optuna's RDB storage
    never called stale, and the resumed driver waited for it forever (the PostgreSQL kill test hung twice)."""
    from autopeft.backends import open_storage
    from autopeft.storage import fail_stale

    st = open_storage(f"sqlite:///{tmp_path / 's.db'}", True, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = optuna.create_study(storage=st, study_name="s")
        orphan, live = s.ask(), s.ask()
    assert fail_stale(s) == []  # within the grace period: neither
    time.sleep(2.3)
    st.record_heartbeat(live._trial_id)  # a live driver keeps beating its trial
    assert fail_stale(s) == [orphan._trial_id]
    states = {t.number: t.state for t in s.get_trials()}
    assert states == {orphan.number: TrialState.FAIL, live.number: TrialState.RUNNING}
