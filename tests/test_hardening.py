"""Bad input and races found by the reliability and security probe: each ends in one line and exit code 2 with
nothing written where it should not be, and drivers racing on a new study share its total exactly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft.cli import main


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], contains: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert contains in err, err


def test_study_names_cannot_escape_the_studies_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    for name in ("../escape-rel", str(tmp_path / "abs" / "escape-abs"), "x" * 5000, ".hidden"):
        _one_line(capsys, ["search", "--study", name, "--data-dir", str(tmp_path / "none")], "must be 1-200 letters")
        _one_line(capsys, ["show", "--study", name], "must be 1-200 letters")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_read_only_commands_never_create_a_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    for cmd in (["show", "--study", "x"], ["best", "--study", "x"], ["list"], ["export", "--study", "x", "--best", "-o",
                                                                                 str(tmp_path / "o")]):
        _one_line(capsys, [*cmd, "--storage", f"sqlite:///{other}"], "holds no Optuna studies")
    assert other.stat().st_size == 0 and not (tmp_path / "o").exists()


def test_in_memory_sqlite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(capsys, ["list", "--storage", "sqlite://"], "keeps nothing (in-memory SQLite)")


@pytest.mark.parametrize("text,message", [
    ("trust-remote-code: true\n", "may not switch on trust-remote-code"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ntrials: [*d, *d, *d, *d, *d, *d, *d, *d]\n", "expands to over 20000 values"),
    (None, "is not UTF-8 text"),
])
def test_bad_study_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, message: str) -> None:
    p = tmp_path / "spec.yaml"
    if text is None:
        p.write_bytes(bytes(range(256)) * 4)
    else:
        p.write_text(text, encoding="utf-8")
    t0 = time.monotonic()
    _one_line(capsys, ["search", "--spec", str(p)], message)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("argv,message", [
    (["search", "--seed", "-1"], "--seed: must be in 0..4294967295, got -1"),
    (["search", "--seed", str(2**64)], "--seed: must be in 0..4294967295"),
    (["train", "--config", "c", "-o", "o", "--epochs", "inf"], "--epochs: must be auto or a finite number > 0, got inf"),
    (["train", "--config", "c", "-o", "o", "--n-train", "0"], "--n-train: must be >= 1, got 0"),
    (["search", "--executor", "ray", "--gpus-per-trial", "-1", "--data-dir", "/nonexistent"],
     "--gpus-per-trial must be a finite number >= 0, got -1"),
    ([], "a command is required"),
])
def test_bad_options_end_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(capsys, argv, message)


def test_export_onto_an_existing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.storage import SCHEMA_VERSION

    url = f"sqlite:///{tmp_path / 's.db'}"
    s = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize", "minimize"])
    for k, v in {"autopeft_schema": SCHEMA_VERSION, "model": "m", "task": {"task": "sst2"}, "space_hash": "h",
                 "objectives": ["score", "params", "memory"], "ref_point": [0.5, -6.0, -4.0], "fidelity": {},
                 "metric": "accuracy", "num_labels": 2, "base_params": 1000}.items():
        s.set_user_attr(k, v)
    cand = {"methods": {}, "layers": [], "sparsity": {}, "lr_multiplier": 1.0}
    s.add_trial(optuna.trial.create_trial(values=[0.8, 10.0, 5.0], user_attrs={"candidate": cand}))
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    _one_line(capsys, ["export", "--study", "s", "--storage", url, "--trial", "0", "-o", str(blocker)], str(blocker))
    assert blocker.read_text() == "x"


def test_three_drivers_creating_one_new_study_share_its_total(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """Started together on a study that does not exist yet: all start, and it ends with exactly --trials complete;
    no lock error, no duplicate, no live driver's trial failed (the SQLite case of ``concurrent_drivers``, which runs
    on PostgreSQL in test_postgres.py)."""
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    barrier = tmp_path / "go"
    code = ("import os, pathlib, sys, time\n"
            "from autopeft.cli import main\n"
            f"pathlib.Path({str(tmp_path)!r}, f'ready-{{os.getpid()}}').touch()\n"
            f"while not pathlib.Path({str(barrier)!r}).exists(): time.sleep(0.01)\n"
            "sys.exit(main(sys.argv[1:]))\n")
    argv = ["search", "--model", tiny_model, "--data-dir", str(glue_dir), "--space", "tiny", "--trials", "6",
            "--study", "race", "--storage", storage, "--workers", "1", "--n-startup", "3", "--no-progress",
            "--n-train", "32", "--n-eval", "32", "--epochs", "1", "--max-length", "24", "--batch-size", "16"]
    env = {**__import__("os").environ, "AUTOPEFT_HEARTBEAT_S": "1", "AUTOPEFT_GRACE_S": "10"}
    procs = [subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # all three have imported the CLI and wait at the barrier
    barrier.write_text("go")
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert not any("database is locked" in e for e in errs)
    s = optuna.load_study(study_name="race", storage=storage)
    assert len(s.get_trials(states=(TrialState.COMPLETE,))) == 6
    assert not s.get_trials(states=(TrialState.RUNNING,))
    assert not [t for t in s.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get("status") == "abandoned"]
    keys = [t.user_attrs["candidate_key"] for t in s.get_trials(states=(TrialState.COMPLETE,))]
    assert len(keys) == len(set(keys))


def test_the_api_runs_from_a_plain_script_without_a_main_guard(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """Workers must not re-import the user's script (multiprocessing's spawn did: nested searches, junk trials)."""
    storage = f"sqlite:///{tmp_path / 'plain.db'}"
    script = tmp_path / "plain.py"
    script.write_text(
        "import autopeft\n"
        f"res = autopeft.search(model={tiny_model!r}, task='sst2', data_dir={str(glue_dir)!r}, space='tiny', n_trials=2,\n"
        f"                      storage={storage!r}, study_name='plain', executor='local', workers=2, n_startup=2,\n"
        "                      n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16)\n"
        "print('FRONT', len(res.pareto_front))\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("FRONT") == 1  # the script ran once, not once per worker
    s = optuna.load_study(study_name="plain", storage=storage)
    assert len(s.trials) == 2 and all(t.state == TrialState.COMPLETE for t in s.trials)


def test_no_process_outlives_a_killed_driver(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """kill -9 of the driver at 10 random moments, worker start-up included: 2 s later nothing of the search runs."""
    import os
    import random
    import signal
    import uuid

    import psutil

    rng = random.Random(0)
    argv = [sys.executable, "-m", "autopeft.cli", "search", "--model", tiny_model, "--data-dir", str(glue_dir), "--space",
            "tiny", "--trials", "50", "--study", "orph", "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--workers", "2",
            "--no-progress", "--n-train", "32", "--n-eval", "32", "--epochs", "1", "--max-length", "24",
            "--batch-size", "16", "--no-collapse-stop"]  # one study over 10 runs: it must never stop by itself
    for i in range(10):
        mark = uuid.uuid4().hex
        proc = subprocess.Popen(argv, env={**os.environ, "AUTOPEFT_TEST_MARK": mark}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0) if i else 2.5)  # the first kill lands while the workers start
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 2.0
        while True:  # none left once is none left for good: only a marked process could start another
            left = []
            for p in psutil.process_iter(["pid"]):
                try:
                    if p.environ().get("AUTOPEFT_TEST_MARK") == mark and p.status() != psutil.STATUS_ZOMBIE:
                        left.append(p.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert left == [], f"kill {i}: processes {left} outlived the driver"


@pytest.mark.parametrize("text,message", [
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "methods: {lora: {r: {choices: *d}}}\n", "expands to over 20000 values"),
    ("methods: {lora: {r: {choices: [" + ",".join(str(i) for i in range(1, 5001)) + "]}}}\n",
     "has 5000 entries, at most 1000 are allowed"),
    ("methods: {lora: {r: 8}}\ntraining: {lr_multiplier: {float: [.nan, 2]}}\n", "must be a finite number, got nan"),
    ("methods: {lora: {r: " + "x" * 100_000 + "}}\n", "must be a number, got 'xxxxxxxx"),
], ids=["alias-bomb", "5000-choices", "nan", "long-value"])
def test_space_files_are_bounded_and_messages_short(tmp_path: Path, text: str, message: str) -> None:
    from autopeft.errors import SpaceError
    from autopeft.space import SearchSpace

    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    t0 = time.monotonic()
    with pytest.raises(SpaceError) as exc:
        SearchSpace.load(p).bind(4)
    assert message in str(exc.value) and len(str(exc.value)) < 400 and "\n" not in str(exc.value)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("url,message", [
    ("journal://", "names no file"),
    ("journal:///etc", "is a folder"),
    ("journal:///proc/x/y.log", "storage file not found: /proc/x/y.log"),
    ("sqlite:////proc/x/y.db", "storage file not found: /proc/x/y.db"),
])
def test_bad_storage_urls_are_one_line(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(capsys, ["list", "--storage", url], message)


@pytest.mark.parametrize("url,message", [
    ("journal:///proc/x/y.log", "cannot open journal storage /proc/x/y.log"),
    ("sqlite:////proc/x/y.db", "cannot create the folder of storage /proc/x/y.db"),
])
def test_storage_that_cannot_be_created_is_a_clear_error(url: str, message: str) -> None:
    from autopeft.errors import StudyError
    from autopeft.storage import get_storage

    with pytest.raises(StudyError, match=message):
        get_storage(url, create=True)


def test_files_that_are_not_journals_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.errors import StudyError
    from autopeft.storage import get_storage

    for name, data in (("text.log", b"root:x:0:0:root:/root:/bin/bash\n"), ("bin.log", bytes(range(256)))):
        p = tmp_path / name
        p.write_bytes(data)
        _one_line(capsys, ["list", "--storage", f"journal://{p}"], "is not an Optuna journal")
        with pytest.raises(StudyError, match="is not an Optuna journal"):
            get_storage(f"journal://{p}", create=True)  # what search opens: it must not append to the file
        assert p.read_bytes() == data


@pytest.mark.parametrize("name,content,message", [
    ("deep.jsonl", '{"text": "a", "label": 0}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": 1}\n',
     "line 2 nests too deeply"),
    ("digits.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": ' + "9" * 5001 + "}\n", "line 2 is not valid JSON"),
    ("digits.csv", "text,label\na,0\nb," + "7" * 5001 + "\n", "holds a 5001-digit number"),
    ("nan.csv", "text,label\na,0\nb,1\nc,nan\n", "line 4 has no value (nan) in label column 'label'"),
    ("long.jsonl", '{"text": "a", "label": 0}\n{"text": "' + "x" * 2_000_000 + '", "label": 1}\n',
     "line 2 has 2,000,024 characters, over the limit of 1,048,576 per row"),
], ids=["deep", "digits-jsonl", "digits-csv", "nan-label", "long-line"])
def test_bad_data_files_are_one_clear_error(tmp_path: Path, name: str, content: str, message: str) -> None:
    from autopeft.data import DataSpec, load_task
    from autopeft.errors import DataError

    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_task(DataSpec(train_file=str(p), text_columns=("text",), label_column="label"))
    assert message in str(exc.value) and "\n" not in str(exc.value) and len(str(exc.value)) < 400


@pytest.mark.parametrize("change,message", [({"vocab_size": -5}, "cannot be built"),
                                            ({"hidden_size": 63, "num_attention_heads": 2}, "cannot be built")])
def test_model_configs_that_cannot_be_built_are_one_clear_error(tiny_model: str, tmp_path: Path, change: dict,
                                                                message: str) -> None:
    import json
    import shutil

    from autopeft.builder import model_info
    from autopeft.errors import ModelError

    d = tmp_path / "broken"
    shutil.copytree(tiny_model, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ModelError, match=message) as exc:
        model_info(str(d), 2)
    assert "\n" not in str(exc.value)


def test_a_budget_below_the_head_is_refused_up_front(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    from autopeft.api import open_search
    from autopeft.errors import ConfigError

    storage = tmp_path / "b.db"
    with pytest.raises(ConfigError, match="is below the 130 parameters of the classification head"):
        open_search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", max_params="1e-9",
                    storage=f"sqlite:///{storage}", executor="inline")
    assert not storage.exists()


def test_a_full_disk_ends_in_one_line_and_loses_nothing(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """The disk fills up mid-search (the driver may not grow any file past a limit: RLIMIT_FSIZE, which fails writes
    as a full disk does): one line, exit 2, the trials completed before stay as they were, and once there is room a
    rerun finishes the study with every trial in a final state."""
    import resource
    import signal

    from test_reliability import _cmd, _env, create_study

    url = f"sqlite:///{tmp_path / 'full.db'}"
    create_study(tiny_model, glue_dir, url, 2, "full")
    before = {t.number: t.values for t in optuna.load_study(study_name="full", storage=url).get_trials(
        states=(TrialState.COMPLETE,))}
    limit = (tmp_path / "full.db").stat().st_size + 4096  # one more page, then the disk is full

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(_cmd(tiny_model, glue_dir, url, 5, study="full"), env=_env(), capture_output=True, text=True,
                       preexec_fn=full_disk, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("autopeft: error:") and "full" in last, r.stderr
    s = optuna.load_study(study_name="full", storage=url)
    assert {t.number: t.values for t in s.get_trials(states=(TrialState.COMPLETE,)) if t.number in before} == before
    time.sleep(3.5)  # a trial the full disk left RUNNING is stale now
    r = subprocess.run(_cmd(tiny_model, glue_dir, url, 5, study="full"), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    s = optuna.load_study(study_name="full", storage=url)
    assert len(s.get_trials(states=(TrialState.COMPLETE,))) == 5 and not s.get_trials(states=(TrialState.RUNNING,))


def test_resuming_in_a_read_only_studies_folder_is_one_line(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """A study whose folder became read-only (a read-only bind mount: root ignores file modes): resuming ends in one
    line naming the storage and what to do, and the study is unchanged; show still reads it."""
    import os

    from test_reliability import _cmd, _env, create_study

    d = tmp_path / "studies"
    d.mkdir()
    url = f"sqlite:///{d / 'ro.db'}"
    create_study(tiny_model, glue_dir, url, 2, "ro")
    data = (d / "ro.db").read_bytes()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode:
        pytest.skip("needs root to bind-mount the studies folder read-only")
    try:
        assert subprocess.run(["mount", "-o", "remount,ro,bind", str(d)], capture_output=True).returncode == 0
        r = subprocess.run(_cmd(tiny_model, glue_dir, url, 4, study="ro"), env=_env(), capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert lines[-1].startswith("autopeft: error: the study storage") and "readonly" in lines[-1], lines[-1]
        assert "make the storage writable" in lines[-1] and str(d / "ro.db") in lines[-1]
        show = subprocess.run([sys.executable, "-m", "autopeft.cli", "show", "--study", "ro", "--storage", url],
                              env=_env(), capture_output=True, text=True)
        assert show.returncode == 0, show.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)
    assert (d / "ro.db").read_bytes() == data


def test_python_dash_m_autopeft_is_the_command(tmp_path: Path) -> None:
    """``python -m autopeft`` (no scripts folder on PATH) runs the CLI with its exit codes: 0, and 2 on bad input."""
    ok = subprocess.run([sys.executable, "-m", "autopeft", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("autopeft "), ok
    bad = subprocess.run([sys.executable, "-m", "autopeft", "search", "--trials", "x"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2, bad
    assert bad.stderr.strip() == "autopeft search: argument --trials: expected an integer, got 'x'", bad.stderr
