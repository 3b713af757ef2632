"""The bad-input corpus of the reliability and security probe (issue 20): every case must end in exit code 2 with
one line on stderr, no traceback, within its time and memory limits, and must leave the folder it ran in (and its
parent) exactly as it was.

``tests/test_fuzz.py`` runs each case (in-process through ``main(argv)``, or in a subprocess under limits for the
cases that once hung or ran out of memory).  Run as a script, it runs every case in a subprocess against the
autopeft found on ``--repo`` and prints how many passed, e.g. to compare two commits::

    python tests/fuzz_corpus.py --repo /path/to/checkout
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: a search that would take long if it were not refused first: small trials on the tiny model
FID = ["--n-train", "32", "--n-eval", "32", "--epochs", "1", "--max-length", "24", "--batch-size", "16", "--space",
       "tiny", "--trials", "2", "--no-progress"]
#: limits of the cases run in a subprocess: seconds and bytes of address space
LIMIT_S, LIMIT_AS = 120, 4 * 2**30


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]  # "{root}", "{tiny}" and "{glue}" are filled in
    message: str  # the one line must contain this
    limited: bool = False  # run in a subprocess under LIMIT_S and LIMIT_AS (once hung or ran out of memory)
    env: tuple[tuple[str, str], ...] = ()


def _search(*extra: str) -> list[str]:
    return ["search", "--model", "{tiny}", "--data-dir", "{glue}", "--task", "sst2", *FID, *extra]


def _data(name: str) -> list[str]:
    return ["search", "--model", "{tiny}", "--train-file", "{root}/" + name, "--text-columns", "text",
            "--label-column", "label", *FID]


CASES: list[Case] = [
    # options
    Case("seed-negative", _search("--seed", "-1"), "--seed: must be in 0..4294967295, got -1"),
    Case("seed-2**64", _search("--seed", str(2**64)), "--seed: must be in 0..4294967295"),
    Case("max-params-1e999", _search("--max-params", "1e999"), "--max-params"),
    Case("learn-weight-negative", _search("--learn-weight", "-1"), "--learn-weight: must be a finite number >= 0, got -1"),
    Case("learn-weight-nan", _search("--learn-weight", "nan"), "--learn-weight: must be a finite number >= 0, got nan"),
    Case("learn-weight-other-sampler", _search("--learn-weight", "10", "--sampler", "gp"),
         "--learn-weight applies to the default sampler (autopeft), not --sampler gp"),
    Case("max-memory-1e999", _search("--max-memory", "1e999"), "--max-memory"),
    Case("max-params-MiB", _search("--max-params", "5 MiB"), "--max-params"),
    Case("max-params-1e-9", _search("--max-params", "1e-9"), "--max-params"),
    Case("gpus-per-trial-negative", _search("--executor", "ray", "--gpus-per-trial", "-1"), "--gpus-per-trial"),
    Case("study-name-5000", _search("--study", "x" * 5000), "study name"),
    Case("study-relative-escape", _search("--study", "../escape-rel"), "study name"),
    Case("study-absolute-escape", _search("--study", "{root}/escape-abs"), "study name"),
    Case("bare", [], "a command is required"),
    # storage
    Case("sqlite-in-memory", _search("--storage", "sqlite://"), "in-memory"),
    Case("journal-no-file", ["list", "--storage", "journal://"], "names no file"),
    Case("journal-text-file", ["list", "--storage", "journal://{root}/passwd"], "is not an Optuna journal"),
    Case("journal-text-file-search", _search("--storage", "journal://{root}/passwd"), "is not an Optuna journal"),
    Case("journal-binary-file", ["list", "--storage", "journal://{root}/bin.log"], "is not an Optuna journal"),
    Case("journal-folder", ["list", "--storage", "journal://{root}/adir"], "is a folder"),
    Case("journal-uncreatable", _search("--storage", "journal:///proc/x/y.log"), "/proc/x/y.log"),
    Case("sqlite-uncreatable", _search("--storage", "sqlite:////proc/x/y.db"), "/proc/x/y.db"),
    Case("sqlite-not-a-study", ["show", "--study", "s", "--storage", "sqlite:///{root}/empty.db"], "empty.db"),
    Case("corrupt-show", ["show", "--study", "s", "--storage", "sqlite:///{root}/corrupt.db"], "corrupt.db"),
    Case("corrupt-list", ["list", "--storage", "sqlite:///{root}/corrupt.db"], "corrupt.db"),
    Case("corrupt-search", _search("--study", "s", "--storage", "sqlite:///{root}/corrupt.db"), "corrupt.db"),
    # exports and training
    Case("export-onto-file", ["export", "--study", "s", "--storage", "sqlite:///{root}/study.db", "--trial", "0", "-o",
                              "{root}/taken"], "taken"),
    Case("export-into-proc", ["export", "--study", "s", "--storage", "sqlite:///{root}/study.db", "--trial", "0", "-o",
                              "/proc/x"], "/proc/x"),
    Case("train-onto-file", ["train", "--config", "{root}/cfg", "--data-dir", "{glue}", "-o", "{root}/taken"], "taken"),
    Case("train-epochs-inf", ["train", "--config", "{root}/cfg", "-o", "{root}/out", "--epochs", "inf"],
         "--epochs: must be auto or a finite number > 0, got inf"),
    Case("train-n-train-0", ["train", "--config", "{root}/cfg", "-o", "{root}/out", "--n-train", "0"],
         "--n-train: must be >= 1, got 0"),
    Case("train-n-train-negative", ["train", "--config", "{root}/cfg", "-o", "{root}/out", "--n-train", "-5"],
         "--n-train: must be >= 1, got -5"),
    Case("train-training-args-field", ["train", "--config", "{root}/cfg", "--data-dir", "{glue}", "-o", "{root}/out",
                                       "--training-args", "learning_rat=1"], "'learning_rat' is not a field"),
    Case("train-training-args-value", ["train", "--config", "{root}/cfg", "--data-dir", "{glue}", "-o", "{root}/out",
                                       "--n-train", "120", "--training-args", "lr_scheduler_type=bogus"],
         "transformers refused the training arguments"),
    Case("train-bf16-and-fp16", ["train", "--config", "{root}/cfg", "--data-dir", "{glue}", "-o", "{root}/out",
                                 "--bf16", "--fp16"], "--bf16 and --fp16 exclude each other"),
    Case("train-corrupt-config", ["train", "--config", "{root}/cfg_corrupt", "-o", "{root}/out"], "autopeft_config.json"),
    Case("plot-without-matplotlib", ["plot", "--study", "s", "--storage", "sqlite:///{root}/study.db", "-o",
                                     "{root}/out.png"], "matplotlib", env=(("PYTHONPATH", "{root}/nompl"),)),
    # specs and spaces
    Case("spec-binary", ["search", "--spec", "{root}/bin.yaml"], "bin.yaml"),
    Case("spec-alias-bomb", ["search", "--spec", "{root}/bomb_spec.yaml"], "bomb_spec.yaml", limited=True),
    Case("space-alias-bomb", _search("--space", "{root}/bomb_space.yaml"), "expands to over", limited=True),
    Case("space-200000-choices", _search("--space", "{root}/choices.yaml"), "over 256 KiB", limited=True),
    Case("space-nan", _search("--space", "{root}/nan.yaml"), "must be a finite number, got nan"),
    Case("spec-trust-remote-code", ["search", "--spec", "{root}/trust.yaml"], "trust"),
    # data files
    Case("jsonl-nested-100000", _data("deep.jsonl"), "nests too deeply"),
    Case("jsonl-5001-digit-label", _data("digits.jsonl"), "line 2"),
    Case("csv-5001-digit-label", _data("digits.csv"), "5001-digit number"),
    Case("csv-nan-label", _data("nan.csv"), "no value (nan)"),
    Case("jsonl-30MB-line", _data("huge.jsonl"), "per row", limited=True),
    # model folders
    Case("model-vocab-negative", _search("--model", "{root}/m_vocab"), "cannot be built"),
    Case("model-hidden-63-heads-2", _search("--model", "{root}/m_hidden"), "cannot be built"),
]


def prepare(root: Path, tiny: str, huge: bool = False) -> None:
    """The files the cases point at (the 30 MB one only if ``huge``)."""
    import optuna

    root.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{root / 'study.db'}"
    s = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize", "minimize"])
    for k, v in {"autopeft_schema": 1, "model": tiny, "task": {"task": "sst2"}, "space_hash": "h",
                 "objectives": ["score", "params", "memory"], "ref_point": [0.5, -6.0, -4.0], "fidelity": {},
                 "metric": "accuracy", "num_labels": 2, "base_params": 1000}.items():
        s.set_user_attr(k, v)
    cand = {"methods": {}, "layers": [], "sparsity": {}, "lr_multiplier": 1.0}
    s.add_trial(optuna.trial.create_trial(values=[0.8, 10.0, 5.0], user_attrs={"candidate": cand}))
    del s
    data = bytearray((root / "study.db").read_bytes())
    for off in range(4096, len(data), 4096):  # every page after the first: a damaged file, as a disk fault leaves
        data[off:off + 64] = b"\xa5" * 64
    (root / "corrupt.db").write_bytes(bytes(data))
    (root / "empty.db").write_bytes(b"")
    (root / "taken").write_text("x")
    (root / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "bin.log").write_bytes(bytes(range(256)))
    (root / "adir").mkdir(exist_ok=True)
    (root / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    bomb = ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
    (root / "bomb_spec.yaml").write_text(bomb + "model: *f\ntask: *f\n")
    (root / "bomb_space.yaml").write_text(bomb + "methods: {lora: {r: {choices: *f}}}\n")
    (root / "choices.yaml").write_text("methods: {lora: {r: {choices: [" + ",".join(map(str, range(1, 200_001)))
                                        + "]}}}\n")
    (root / "nan.yaml").write_text("methods: {lora: {r: 8}}\ntraining: {lr_multiplier: {float: [.nan, 2]}}\n")
    (root / "trust.yaml").write_text(f"model: {tiny}\ntask: sst2\ntrust-remote-code: true\n")
    (root / "deep.jsonl").write_text('{"text": "a", "label": 0}\n{"text": ' + "[" * 100_000 + "]" * 100_000
                                     + ', "label": 1}\n')
    (root / "digits.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": ' + "9" * 5001 + "}\n")
    (root / "digits.csv").write_text("text,label\na,0\nb," + "7" * 5001 + "\n")
    (root / "nan.csv").write_text("text,label\na,0\nb,1\nc,nan\nd,0\n")
    if huge:
        with open(root / "huge.jsonl", "w") as f:
            f.write('{"text": "a", "label": 0}\n')
            for i in range(101):
                f.write('{"text": "' + ("x" * 30_000_000 if i == 0 else "y") + f'", "label": {i % 2}}}\n')
    for name, change in (("m_vocab", {"vocab_size": -5}), ("m_hidden", {"hidden_size": 63, "num_attention_heads": 2})):
        d = root / name
        shutil.copytree(tiny, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
    from autopeft.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["export", "--study", "s", "--storage", url, "--trial", "0", "-o", str(root / "cfg")])
    if rc != 0:
        raise RuntimeError(f"could not export the corpus's config (exit {rc})")
    shutil.copytree(root / "cfg", root / "cfg_corrupt")
    (root / "cfg_corrupt" / "autopeft_config.json").write_text('{"base_model": ')
    (root / "nompl" / "matplotlib").mkdir(parents=True, exist_ok=True)
    (root / "nompl" / "matplotlib" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'matplotlib'\", name='matplotlib')\n")


def fill(case: Case, root: Path, tiny: str, glue: str) -> tuple[list[str], dict[str, str]]:
    sub = {"{root}": str(root), "{tiny}": tiny, "{glue}": glue}

    def f(a: str) -> str:
        for k, v in sub.items():
            a = a.replace(k, v)
        return a

    return [f(a) for a in case.argv], {k: f(v) for k, v in case.env}


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folders`` with its size and modification time."""
    out: dict[str, tuple[int, int]] = {}
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def verdict(rc: int | None, err: str, message: str, elapsed: float) -> str | None:
    """None if the case passed, else what went wrong."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if rc is None:
        return f"still running after {elapsed:.0f} s"
    if "Traceback" in err:
        return f"traceback (exit {rc}): {lines[-1][:200] if lines else ''}"
    if rc != 2:
        return f"exit {rc}: {err[-300:]!r}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr: {err[:300]!r}"
    if len(lines[0]) > 600:
        return f"a {len(lines[0])}-character line"
    if message not in lines[0]:
        return f"message {lines[0][:300]!r} lacks {message!r}"
    return None


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    os.setsid()


def run_subprocess(case: Case, root: Path, tiny: str, glue: str, pythonpath: str | None = None) -> str | None:
    argv, extra = fill(case, root, tiny, glue)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUTOPEFT_STUDIES_DIR": str(root / "studies_default"), **extra}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra.get("PYTHONPATH"), pythonpath) if p)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "autopeft.cli", *argv], cwd=root / "work", env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_limit)
    try:
        _, err = proc.communicate(timeout=LIMIT_S)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        rc = None
    if rc is not None and rc < 0:
        return f"killed by signal {-rc} (memory limit {LIMIT_AS >> 30} GiB?)"
    return verdict(rc, err, case.message, time.monotonic() - t0)


def main_(args: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="the checkout to test")
    ap.add_argument("--glue", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    ap.add_argument("--scratch", default="/tmp/autopeft-fuzz-corpus")
    ap.add_argument("-k", default="", help="only cases whose id contains this")
    a = ap.parse_args(args)
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]  # conftest's tiny model, and this checkout to prepare the files with
    from conftest import build_tiny_bert

    scratch = Path(a.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    tiny = str(build_tiny_bert(scratch / "tiny"))
    passed = tried = 0
    for case in CASES:
        if a.k not in case.id:
            continue
        root = scratch / case.id
        prepare(root, tiny, huge="30MB" in case.id)
        (root / "work").mkdir()
        before = snapshot(root, scratch / "tiny")
        why = run_subprocess(case, root, tiny, a.glue, pythonpath=a.repo)
        moved = changed(before, snapshot(root, scratch / "tiny"))
        if why is None and moved:
            why = f"wrote {moved[:3]}"
        tried += 1
        passed += why is None
        print(f"{'ok  ' if why is None else 'FAIL'} {case.id}" + (f": {why}" if why else ""), flush=True)
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} of {tried} cases passed")
    return 0 if passed == tried else 1


if __name__ == "__main__":
    sys.exit(main_())
