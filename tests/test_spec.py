"""Study specs: YAML files of search options (studies/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.cli import main


def test_study_specs_expand_to_checked_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.cli import build_parser, expand_spec

    shipped = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))
    assert len(shipped) >= 4
    for spec in shipped:  # every shipped example parses into valid search options
        args = build_parser().parse_args(expand_spec(["search", "--spec", str(spec)]))
        assert args.cmd == "search" and args.study and args.trials >= 1
    paper = build_parser().parse_args(expand_spec(["search", "--spec", str(shipped[0].parent / "autopeft-paper-mrpc.yaml")]))
    assert (paper.space, paper.trials, paper.n_startup, paper.objectives) == ("autopeft", 200, 100, "score,params")
    mrpc = build_parser().parse_args(expand_spec(["search", "--spec", str(shipped[0].parent / "mrpc-mixed-budget.yaml")]))
    assert (mrpc.task, mrpc.metric, mrpc.max_params, mrpc.n_train) == ("mrpc", "auc", "0.5%", None)
    for name, rung in (("mrpc-promote-refine.yaml", "2000x2@32"), ("sst2-promote-refine.yaml", "2000x1@32")):
        a = build_parser().parse_args(expand_spec(["search", "--spec", str(shipped[0].parent / name)]))
        assert (a.space, a.metric, a.promote, a.promote_lr_scale, a.refine_rate) == ("mixed", "auc", rung, 1.0, "front")
    # the command line overrides the spec, wherever --spec stands
    over = build_parser().parse_args(expand_spec(["search", "--trials", "7", "--spec",
                                                  str(shipped[0].parent / "sst2-lora.yaml"), "--no-progress"]))
    assert over.trials == 7 and over.space == "lora" and over.no_progress
    # --learn-weight (or learn-weight: in a spec) reaches the API's options as a number; absent, the sampler's default
    from autopeft.commands.search import options

    lw = tmp_path / "lw.yaml"
    lw.write_text("learn-weight: 10\n")
    assert options(build_parser().parse_args(expand_spec(["search", "--spec", str(lw)])))["learn_weight"] == 10.0
    assert options(build_parser().parse_args(["search", "--learn-weight", "2.5"]))["learn_weight"] == 2.5
    assert options(build_parser().parse_args(["search"]))["learn_weight"] is None
    bad = tmp_path / "bad.yaml"
    for text, msg in [("trials: 5\nspaec: lora\n", "unknown key 'spaec' in study spec"),
                      ("trials: -3\n", "argument --trials: must be >= 1, got -3"),
                      ("- a\n- b\n", "must be a mapping of search options, not list"),
                      ("trials: [1\n", "is not valid YAML"),
                      ("no_progress: 3\n", "'no_progress' in study spec"),
                      ("max_params: {a: 1}\n", "must be a number, a string or a list")]:
        bad.write_text(text)
        assert main(["search", "--spec", str(bad)]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert main(["search", "--spec", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read study spec" in capsys.readouterr().err


def test_search_from_a_spec_runs(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec.write_text(f"study: from-spec\nstorage: {storage}\nmodel: {tiny_model}\ndata-dir: {glue_dir}\nspace: tiny\n"
                    "trials: 3\nsampler: random\nworkers: 1\nexecutor: inline\nno_progress: true\n"
                    "n_train: 32\nn_eval: 32\nepochs: 1\nmax_length: 24\nbatch_size: 16\nobjectives: [score, params]\n")
    assert main(["search", "--spec", str(spec)]) == 0
    import optuna

    st = optuna.load_study(study_name="from-spec", storage=storage)
    assert len([t for t in st.trials if t.state.name == "COMPLETE"]) == 3 and len(st.directions) == 2
