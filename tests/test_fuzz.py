"""Fuzzing bad input (hypothesis): malformed and adversarial search-space YAML and CLI arguments end in a
clean autopeft error / exit code 2, never a traceback or a hang, and leave an existing study untouched.  Then the
probe's corpus (:mod:`fuzz_corpus`): every case it found, one test each."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopeft.cli import main
from autopeft.errors import SpaceError
from autopeft.space import SearchSpace

KEYS = ["version", "name", "select", "placement", "methods", "sparsity", "training", "layers", "lora", "dora", "ia3",
        "prefix", "serial_adapter", "parallel_adapter", "full", "r", "size", "length", "targets", "choices", "int",
        "float", "log", "per_layer", "fraction", "criterion", "lr_multiplier", "alpha_ratio", "dropout", "scaling",
        "all", "one", "per_layer", "bogus"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 1000), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(KEYS + ["q", "v", "ffn_up", "random", "magnitude", ""]), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=25)
spaces = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces)
def test_random_space_dicts_validate_or_raise_space_error(data: dict) -> None:
    try:
        sp = SearchSpace.from_dict(data)
    except SpaceError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    b = sp.bind(4)  # a valid space binds and round-trips
    import numpy as np

    for c in b.sample(np.random.default_rng(0), 5):
        assert b.decode(b.encode(c)) == c


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_as_space_file(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    p = tmp_path_factory.mktemp("fz") / "s.yaml"
    p.write_bytes(blob)
    try:
        SearchSpace.load(p)
    except SpaceError:
        pass


ADVERSARIAL = [
    "a: &a [*a, *a]\n",                                   # recursive alias
    "!!python/object/apply:os.system ['touch /tmp/pwned']\n",
    "methods: {lora: {r: {choices: [" + ",".join(["1"] * 5000) + "]}}}\n",
    "methods:\n  lora:\n    r: {int: [1, 1.0e309]}\n",
    "methods: {lora: {r: .nan}}\n",
    "methods: {lora: {r: {int: [1, 99999999999999999999999]}}}\n",
    "- " * 2000 + "x\n",
    "methods: {lora: {targets: {choices: [[q, q]]}}}\n",
    "\x00\x01binary",
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=[f"adv{i}" for i in range(len(ADVERSARIAL))])
def test_adversarial_yaml(tmp_path: Path, text: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        SearchSpace.load(p).bind(4)
    except SpaceError as exc:
        assert "\n" not in str(exc)
    assert not Path("/tmp/pwned").exists()


OPTS = ["--trials", "--sampler", "--space", "--study", "--storage", "--max-params", "--max-memory", "--n-train",
        "--epochs", "--workers", "--executor", "--objectives", "--metric", "--seed", "--timeout", "--format",
        "--max-length", "--batch-size", "--text-columns", "--label-column", "--train-file", "--best", "--trial", "-o"]
VALS = ["0", "-1", "1", "2.5", "nan", "inf", "1e9", "abc", "", "%", "5%", "10MiB", "-3GiB", "score", "params,score",
        "tpe", "magic", "local", "ray2", "table", "json", "sqlite:///", "postgresql://nouser@127.0.0.1:1/x", "ghost", "::"]


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("ex")
    url = f"sqlite:///{d / 'ex.db'}"
    s = optuna.create_study(study_name="keep", storage=url, directions=["maximize", "minimize", "minimize"])
    s.set_user_attr("autopeft_schema", 1)
    s.add_trial(optuna.trial.create_trial(values=[0.7, 100.0, 50.0]))
    return url


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(["search", "show", "best", "export", "list", "plot", "bogus"]),
       st.lists(st.tuples(st.sampled_from(OPTS), st.sampled_from(VALS)), max_size=5))
def test_cli_fuzz_never_tracebacks(existing: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str], cmd: str, pairs: list[tuple[str, str]]) -> None:
    d = tmp_path_factory.mktemp("cli")
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(d))
    argv = [cmd]
    for o, v in pairs:
        argv += [o] if o == "--best" else [o, v]
    if cmd == "search":  # never train in the fuzz: the data cannot be found
        argv += ["--data-dir", str(d / "no-data"), "--storage", existing, "--study", "keep"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)
    assert len(optuna.load_study(study_name="keep", storage=existing).trials) == 1


# ----------------------------------------------------------------------------- the probe's corpus
import fuzz_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus_root(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    fuzz_corpus.prepare(root, tiny_model, huge=True)
    (root / "work").mkdir()
    return root


@pytest.mark.parametrize("case", fuzz_corpus.CASES, ids=[c.id for c in fuzz_corpus.CASES])
def test_corpus_case(case: fuzz_corpus.Case, corpus_root: Path, tiny_model: str, glue_dir: Path,
                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit code 2, one line naming the problem, no traceback, within the limits, and nothing written in the
    folder it ran in, its parent, the studies folder or the model folder."""
    import time

    tops = (corpus_root, Path(tiny_model))
    before = fuzz_corpus.snapshot(*tops)
    if case.limited or case.env:  # once hung or ran out of memory, or needs its own environment: a subprocess
        why = fuzz_corpus.run_subprocess(case, corpus_root, tiny_model, str(glue_dir),
                                         pythonpath=str(Path(__file__).resolve().parents[1]))
    else:
        argv, _ = fuzz_corpus.fill(case, corpus_root, tiny_model, str(glue_dir))
        monkeypatch.chdir(corpus_root / "work")
        monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(corpus_root / "studies_default"))
        t0 = time.monotonic()
        rc = main(argv)
        why = fuzz_corpus.verdict(rc, capsys.readouterr().err, case.message, time.monotonic() - t0)
    assert why is None, why
    assert fuzz_corpus.changed(before, fuzz_corpus.snapshot(*tops)) == [], case.id
