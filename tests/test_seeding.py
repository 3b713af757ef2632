"""--enqueue and --warm-start: given configs and another study's front run first, exactly once, and survive a kill."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import autopeft
from autopeft.candidate import Candidate
from autopeft.cli import expand_spec, main
from autopeft.errors import ConfigError
from autopeft.executors.simulated import RUNNER, run
from autopeft.seeding import read_sources, remap_layers

from conftest import build_tiny_bert

FID = dict(n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16)
ENTRIES = [
    {"methods": {"lora": {"r": 2, "targets": ["q", "v"]}}, "layers": "all"},
    {"candidate": {"methods": {"serial_adapter": {"size": 8}}, "layers": [1], "lr_multiplier": 1.0}},  # a show row
    {"methods": {"lora": {"r": 4, "targets": ["q", "k", "v", "o"]}}, "layers": [0], "sparsity": {"fraction": 0.5}},
    {"methods": {}, "layers": []},  # head only
]


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny_bert4"), layers=4))


def _opts(model: str, glue_dir: Path, storage: str, name: str, n: int, **kw: Any) -> dict[str, Any]:
    """Simulated trials (nothing trains); our sampler, kept in its random start-up (it avoids candidates the study
    holds; Optuna's random sampler would repeat some): what runs first is what is tested."""
    return {**dict(model=model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=n, storage=storage,
                   study_name=name, executor="inline", runner=RUNNER, n_startup=50, progress=False,
                   **FID), **kw}


def _file(tmp_path: Path, entries: list[Any], name: str = "q.yaml") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(entries))
    return str(p)


def _keys(study: Any) -> list[str]:
    return [t.user_attrs["candidate_key"] for t in sorted(study.trials, key=lambda t: t.number)]


def _expected(entries: list[Any]) -> list[str]:
    out = []
    for e in entries:
        d = dict(e.get("candidate", e))
        if d.get("layers") == "all":
            d["layers"] = [0, 1]
        for cfg in d["methods"].values():  # what the tiny space fixes for lora, filled in as a space file would
            if "r" in cfg:
                cfg.update(alpha_ratio=2.0, dropout=0.1)
            if "size" in cfg:
                cfg.setdefault("scaling", 1.0)
        out.append(Candidate.from_dict(d).key)
    return out


def test_enqueue_runs_exactly_the_given_configs_first(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "q", 6, enqueue=_file(tmp_path, ENTRIES)))
    keys = _keys(res.study)
    assert keys[:4] == _expected(ENTRIES)  # in the file's order, exactly those configs
    assert all(t.state == TrialState.COMPLETE for t in res.study.trials[:4])
    assert [t.user_attrs["seeded_by"] for t in res.study.trials[:4]] == [f"enqueue:{tmp_path / 'q.yaml'} entry {i}"
                                                                         for i in range(1, 5)]
    assert "seeded_by" not in res.study.trials[4].user_attrs and len(set(keys)) == len(keys) == 6
    # the API takes configs too (dicts, Candidates); the study already holds these: nothing is queued again
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "q", 7,
                                  enqueue=[Candidate.from_dict(res.study.trials[4].user_attrs["candidate"])]))
    assert len(res.study.trials) == 7 and not [t for t in res.study.trials if t.state == TrialState.PRUNED]


def test_baselines_the_space_can_express(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "b", 2, enqueue="baselines", space="lora"))
    assert res.study.trials[0].user_attrs["seeded_by"] == "baseline:lora r=8 q,v"
    assert res.study.trials[0].user_attrs["summary"] == "lora r=8 [q,v] | layers 0,1"
    err = capsys.readouterr().err
    assert "--enqueue baselines: 3 of 4 configs left out: baseline ia3 (ia3 [k,v,ffn_down] | layers 0,1): method ia3 " \
           "is not in search space 'lora' (lora)" in err
    with pytest.raises(ConfigError, match=r"^--enqueue baselines: none of its 4 configs fits this search; first: "
                                          r"baseline lora r=8 q,v .*lora.r = 8 is outside search space 'tiny' \(1, 2, 4\)"):
        autopeft.search(**_opts(tiny_model, glue_dir, storage, "b2", 2, enqueue="baselines"))


def test_a_new_study_runs_the_baselines_its_space_expresses_first_by_default(tiny_model: str, glue_dir: Path,
                                                                             tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """No --enqueue, no --warm-start: a new study queues the hand-designed baselines its space can express (here the
    lora space: LoRA r=8 on q,v of every layer), quietly leaving out the others; a resumed study queues nothing;
    ``enqueue="none"`` turns it off; a space that expresses none runs none, without a message."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "d", 2, space="lora"))
    assert res.study.trials[0].user_attrs["seeded_by"] == "baseline:lora r=8 q,v"
    assert "seeded_by" not in res.study.trials[1].user_attrs
    err = capsys.readouterr().err
    assert "1 config(s) queued to run first (1 baseline)" in err and "left out" not in err
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "d", 3, space="lora"))  # resumed: nothing queued
    assert len(res.study.trials) == 3 and "queued" not in capsys.readouterr().err
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "off", 1, space="lora", enqueue="none"))
    assert "seeded_by" not in res.study.trials[0].user_attrs
    res = autopeft.search(**_opts(tiny_model, glue_dir, storage, "tiny", 1))  # r=8 is outside the tiny space
    assert "seeded_by" not in res.study.trials[0].user_attrs and "queued" not in capsys.readouterr().err
    from autopeft.config import SearchConfig

    assert SearchConfig.from_options().enqueue is None and SearchConfig.from_options(enqueue="none").enqueue == ()


@pytest.mark.parametrize("entry,msg", [
    ({"methods": {"lora": {"r": 3, "targets": ["q", "v"]}}, "layers": [0]},
     r"entry 1 \(lora r=3 \[q,v\] \| layers 0\): lora.r = 3 is outside search space 'tiny' \(1, 2, 4\)$"),
    ({"methods": {"ia3": {"targets": ["k", "v"]}}, "layers": [0]},
     r"entry 1 \(ia3 \[k,v\] \| layers 0\): method ia3 is not in search space 'tiny' \(lora, serial_adapter\)$"),
    ({"methods": {"lora": {"r": 4, "targets": ["q", "k", "v", "o"]}}, "layers": "all"},
     r"entry 1 \(lora r=4 \[q,k,v,o\] \| layers 0,1\): 4,226 trainable params > --max-params 3,000$"),
    ({"methods": {"lora": {"rank": 4}}, "layers": [0]}, r"entry 1: unknown key 'rank' in candidate methods.lora"),
    ({"methods": {"lora": {"r": 4}}, "layers": [5]}, r"entry 1: layer 5 does not exist, the model has 2 layers"),
    ("lora r=9", r"entry 1: 'lora r=9' is no baseline name \(known: lora r=8 q,v, ia3, prefix 20, serial adapter 64"),
    (7, r"entry 1: expected a config \(a mapping with keys methods, layers, sparsity, lr_multiplier\), got 7$"),
])
def test_a_bad_entry_is_one_line_and_no_study(entry: Any, msg: str, tiny_model: str, glue_dir: Path,
                                              tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with pytest.raises(ConfigError, match=msg):
        autopeft.search(**_opts(tiny_model, glue_dir, f"sqlite:///{db}", "bad", 2, max_params=3000,
                                enqueue=_file(tmp_path, [entry])))
    assert not db.exists()  # refused before the study was created or its reference point measured


def test_bad_files_give_one_line_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path))
    (tmp_path / "broken.yaml").write_text("- {methods: [\n")
    (tmp_path / "empty.json").write_text("[]")
    for arg, msg in ((str(tmp_path / "nope.yaml"), "no such file"), (str(tmp_path / "broken.yaml"), "is not valid YAML"),
                     (str(tmp_path / "empty.json"), "the file lists no config")):
        assert main(["search", "--enqueue", arg, "--space", "tiny"]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and arg in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert main(["search", "--warm-start", "a/b@x"]) == 2
    assert "study name 'a/b' must be" in capsys.readouterr().err
    from autopeft.config import SearchConfig

    for bad, msg in (({"warm_start": "a@"}, "give NAME or NAME@STORAGE_URL"),
                     ({"enqueue": 5}, "enqueue must be a path, 'baselines', or a list of paths and configs, got int"),
                     ({"enqueue": [None]}, "enqueue: each item must be a path, 'baselines' or a config mapping")):
        with pytest.raises(ConfigError, match=msg):
            SearchConfig.from_options(**bad)
    assert SearchConfig.from_options(enqueue="a.yaml, ,baselines").enqueue == ("a.yaml", "baselines")
    spec = tmp_path / "spec.yaml"
    spec.write_text("enqueue: [a.yaml, baselines]\nwarm-start: other\n")
    assert expand_spec(["search", "--spec", str(spec)]) == ["search", "--enqueue", "a.yaml,baselines",
                                                            "--warm-start", "other"]


def test_read_sources_and_export_folders(tmp_path: Path) -> None:
    Candidate.from_dict(ENTRIES[3]).save(tmp_path / "export")
    got = read_sources([str(tmp_path / "export"), "baselines", {"methods": {}}])
    assert [w for w, _ in got] == [f"--enqueue {tmp_path / 'export'} entry 1", "baselines", "enqueue item 3"]


def test_remap_layers_by_relative_depth() -> None:
    c = Candidate.make({"lora": {"r": [2, 4, 8], "targets": ["q", "v"]}}, [3, 4, 5])  # the top half of 6 layers
    deeper = remap_layers(c, 6, 12)
    assert deeper.layers == list(range(6, 12)) and deeper.methods["lora"]["r"] == [2, 2, 4, 4, 8, 8]
    assert deeper.methods["lora"]["targets"] == ["q", "v"]
    shallower = remap_layers(c, 6, 3)
    assert shallower.layers == [1, 2] and shallower.methods["lora"]["r"] == [2, 4]
    every = Candidate.make({"lora": {"r": 8, "targets": ["q"]}}, range(12))
    assert remap_layers(every, 12, 6).layers == list(range(6)) == remap_layers(Candidate.make(
        {"lora": {"r": 8, "targets": ["q"]}}, range(3)), 3, 6).layers
    head = Candidate.make({}, [])
    assert remap_layers(head, 12, 6) == head


def test_warm_start_puts_the_other_front_first(tiny_model: str, tiny4: str, glue_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    src = autopeft.search(**_opts(tiny_model, glue_dir, storage, "src", 8))
    front = src.front_trials()  # best score first
    assert len(front) >= 2
    # another model of the family (4 layers, not 2) on another task; a sampler with no prior gets the whole front first
    res = autopeft.search(**_opts(tiny4, glue_dir, storage, "dst-tpe", len(front) + 1, warm_start="src", task="mrpc",
                                  sampler="tpe"))
    want = [remap_layers(Candidate.from_dict(t.user_attrs["candidate"]), 2, 4).key for t in front]
    assert _keys(res.study)[:len(front)] == want
    assert [t.user_attrs["seeded_by"] for t in res.study.trials[:len(front)]] == [f"warm-start:src#{t.number}"
                                                                                  for t in front]
    assert "layers mapped by relative depth from 2 to 4" in capsys.readouterr().err
    # the default sampler: the front's best first (WARM_QUEUE), then its own proposals with the prior
    res = autopeft.search(**_opts(tiny4, glue_dir, storage, "dst", 3, warm_start="src", task="mrpc"))
    assert _keys(res.study)[0] == want[0] and res.study.trials[0].user_attrs["seeded_by"] == f"warm-start:src#{front[0].number}"
    assert all("seeded_by" not in t.user_attrs for t in res.study.trials[1:])
    assert "the best 1 queued first, every trial the sampler's prior for the first 20 trials" in capsys.readouterr().err
    # the other study's trials are also the sampler's prior: each mapped to 4 layers, its score put on this study's
    # scale (the same share of the chance-to-perfect gap)
    from autopeft.sampler_prior import map_scores
    from autopeft.seeding import prior_points

    chance = res.meta["ref_point"][0]
    prior = prior_points("src", storage, 4, chance)
    done = [t for t in src.study.get_trials() if t.state.name == "COMPLETE"]
    assert len(prior) == len(done) and len(done) >= 6
    want_prior = {remap_layers(Candidate.from_dict(t.user_attrs["candidate"]), 2, 4).key:
                  float(map_scores([t.values[0]], src.meta["ref_point"][0], chance)[0]) for t in done}
    assert {c.key: pytest.approx(y) for c, y in prior} == want_prior
    assert res.study.sampler._prior is not None and len(res.study.sampler._prior[1]) == len(prior)
    with pytest.raises(ConfigError, match="a study cannot warm-start itself"):
        autopeft.search(**_opts(tiny_model, glue_dir, storage, "src", 9, warm_start="src"))
    with pytest.raises(autopeft.StudyError, match="no study named 'ghost'"):
        autopeft.search(**_opts(tiny_model, glue_dir, storage, "x", 1, warm_start=f"ghost@{storage}"))


def test_a_warm_started_study_keeps_its_prior_when_resumed(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The prior's source and settings are stored with the study: a plain resume goes on with them (not with the
    defaults of the day), another ``--warm-start`` replaces them with a note, a source gone since gives a note."""
    import autopeft.collapse_model as cm
    import autopeft.sampler_prior as sp

    storage = f"sqlite:///{tmp_path / 's.db'}"
    for name in ("src", "src2"):
        autopeft.search(**_opts(tiny_model, glue_dir, storage, name, 6))
    opts = _opts(tiny_model, glue_dir, storage, "dst", 2, n_startup=8)
    res = autopeft.search(**{**opts, "warm_start": "src"})
    stored = {"source": f"src@{storage}", "until": 20, "learn_with_prior": False}
    assert res.meta["warm_prior"] == stored
    monkeypatch.setattr(sp, "PRIOR_UNTIL", 5)  # the defaults change; the study keeps its own
    monkeypatch.setattr(cm, "LEARN_WITH_PRIOR", True)

    def resume(n: int, **kw: Any) -> tuple[Any, Any]:
        s = autopeft.open_search(**{**opts, "n_trials": n, **kw})
        s.build()
        s.close()
        return s, s.store.study.sampler

    s, sampler = resume(3)  # no --warm-start: the stored prior, its 6 trials, the stored settings
    assert s.warm_prior == stored and s.prior_note == (f"study 'dst' was warm-started from src@{storage}: its trials "
                                                      "stay the sampler's prior until the study has 20 finished trials")
    assert sampler._prior is not None and len(sampler._prior[1]) == 6
    assert (sampler.prior_until, sampler.learn_with_prior) == (20, False)
    s, sampler = resume(3, warm_start="src")  # the same source named again: the same settings, no note
    assert (s.warm_prior, s.prior_note, sampler.prior_until) == (stored, None, 20)
    s, sampler = resume(3, warm_start="src2")  # another source: it replaces the stored one, with today's defaults
    assert s.prior_note == f"study 'dst' was warm-started from src@{storage}; it goes on with src2@{storage} as the sampler's prior"
    assert autopeft.open_search(**opts).store.meta["warm_prior"] == {"source": f"src2@{storage}", "until": 5,
                                                                    "learn_with_prior": True}
    optuna.delete_study(study_name="src2", storage=storage)  # the source is gone: a plain resume goes on without it
    capsys.readouterr()
    argv = ["search", "--model", tiny_model, "--data-dir", str(glue_dir), "--task", "sst2", "--space", "tiny",
            "--storage", storage, "--study", "dst", "--trials", "2", "--no-progress"]
    assert main(argv) == 0  # its 2 trials are done: nothing runs, the sampler is built
    err = capsys.readouterr().err
    assert (f"autopeft: note: study 'dst' was warm-started from src2@{storage}: its trials stay the sampler's prior "
            "until the study has 5 finished trials\n") in err
    assert "autopeft: note: the warm start's source cannot be read (no study named 'src2' in " in err
    res = autopeft.search(**{**opts, "n_trials": 3})  # and it runs on
    assert len(res.complete_trials()) == 3 and res.study.sampler._prior is None
    with pytest.raises(autopeft.StudyError, match="no study named 'src2'"):  # named by the user: it must be readable
        autopeft.search(**{**opts, "n_trials": 4, "warm_start": "src2"})


def test_a_killed_driver_resumes_without_training_a_queued_config_twice(
        tiny_model: str, glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.storage as storage_mod

    monkeypatch.setattr(storage_mod, "GRACE_S", 2.0)  # the least an RDB storage takes (whole seconds, >= 2)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    opts = _opts(tiny_model, glue_dir, storage, "kill", 6, enqueue=_file(tmp_path, ENTRIES))
    s = autopeft.open_search(**opts)
    _, loop = s.build()
    first, second = loop.ask(), loop.ask()  # two queued configs in flight ...
    loop.complete(run(first))  # ... one finishes, then the driver dies (no clean-up: the other stays RUNNING)
    time.sleep(2.5)
    res = autopeft.search(**opts)  # the same command again
    trials = sorted(res.study.trials, key=lambda t: t.number)
    assert trials[second.trial_id].user_attrs["status"] == "abandoned"
    done = [t.user_attrs["candidate_key"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == len(set(done)) == 6  # no config trained twice
    assert set(_expected(ENTRIES)) <= set(done)  # the abandoned one went back to the queue and ran
    assert not [t for t in trials if t.state in (TrialState.PRUNED, TrialState.WAITING)]  # nothing queued twice
    assert sum("seeded_by" in t.user_attrs for t in trials) == len(ENTRIES) + 1  # + the abandoned one's re-run
    # a resume with the same --enqueue after everything ran queues nothing
    res = autopeft.search(**{**opts, "n_trials": 7})
    assert sum("seeded_by" in t.user_attrs for t in res.study.trials) == len(ENTRIES) + 1
    assert optuna.load_study(study_name="kill", storage=storage).trials[-1].state == TrialState.COMPLETE


def test_best_and_export_say_when_the_answer_is_a_baseline_the_study_ran_first(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """On the committed MRPC search (BENCHMARKS.md, "MRPC with the baselines run first") the best config is the LoRA
    baseline, queued as trial 0 and promoted as trial 5: ``best`` carries where it came from (through the promotion)
    and ``export --best`` says so; under IA3's budget the best is the sampler's own LoRA r=2 (trial 20, promoted from
    14), with no such field and no such line."""
    import shutil

    from autopeft.cli import main

    src = Path(__file__).resolve().parent.parent / "bench" / "tables" / "confirm-mrpc-default.db"
    shutil.copy(src, tmp_path / "m.db")
    storage, name = f"sqlite:///{tmp_path / 'm.db'}", "confirm-mrpc-default-2"
    best = autopeft.best_config(name, storage).to_dict()
    assert best["trial"] == 5 and best["rung"] == 1 and best["seeded_by"] == "baseline:lora r=8 q,v"
    small = autopeft.best_config(name, storage, max_params=14_594).to_dict()
    assert small["trial"] == 20 and small["summary"] == "lora r=2 [q,v] | layers 3,4,5 | lr x1.25" and "seeded_by" not in small
    assert autopeft.api.found_config(name, storage, trial=0).seeded_by == "baseline:lora r=8 q,v"
    assert main(["export", "--study", name, "--storage", storage, "--best", "-o", str(tmp_path / "e")]) == 0
    line = ("it is the hand-designed baseline lora r=8 q,v, which the study ran first: no config the search proposed "
            "scored higher within the budget")
    assert line in capsys.readouterr().out
    assert main(["export", "--study", name, "--storage", storage, "--best", "--max-params", "14594",
                 "-o", str(tmp_path / "e2")]) == 0
    assert "hand-designed baseline" not in capsys.readouterr().out
    assert main(["export", "--study", name, "--storage", storage, "--trial", "0", "-o", str(tmp_path / "e3")]) == 0
    assert "hand-designed baseline" not in capsys.readouterr().out  # a trial asked for by number: no claim about "best"
