"""SmolLM2-135M on GSM8K (issue 18): the configs a search found vs LoRA r=8 on q,v and LoRA r=32 on q,v (the peft
method comparison's default), each trained by ``autopeft train``'s code path (transformers' Trainer) at one budget,
scored on the first ``--n-eval`` rows of GSM8K's test split by loss and on ``--generate`` rows by exact match.

Two configs train side by side, one thread each; every result is appended to ``--out`` (JSON lines) as it finishes,
so the command resumes.  The budget is stated in the output: on this 2-core CPU it is far below a full GSM8K epoch.

    python -m bench.llm_gsm8k run --study smollm2-gsm8k-lora --storage sqlite:///bench/tables/llm-gsm8k.db \\
        --found 2 --n-train 256 --n-eval 100 --generate 30 --out bench/tables/llm-gsm8k-final.jsonl
    python -m bench.llm_gsm8k report --out bench/tables/llm-gsm8k-final.jsonl

The fair protocol (a study whose baselines ran at several rates): ``run --vs-baselines --seeds 0,1`` trains each
baseline at its best searched rate and the study's answer under its size per seed; ``report --study S --storage
URL`` pairs them with a verdict per baseline (BENCHMARKS.md, "The fair protocol on an LLM"). ``run --config FILE``
trains the configs of a YAML/JSON list instead (e.g. a baseline at rates outside the study's range).
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data")


def _lora(r: int) -> dict[str, Any]:
    return {"methods": {"lora": {"r": r, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.05}},
            "layers": list(range(30))}


def _one(label: str, cand: dict[str, Any], a: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    import tempfile

    from autopeft.candidate import Candidate
    from autopeft.config import data_spec_dict
    from autopeft.final import train_final

    with tempfile.TemporaryDirectory() as d:
        res = train_final(Candidate.from_dict(cand), "smollm2", data_spec_dict("gsm8k", a["data_dir"]), d,
                          epochs=a["epochs"], n_train=a["n_train"], max_length=a["max_length"],
                          batch_size=a["batch_size"], seeds=[seed], threads=1, device="cpu", progress=False,
                          n_eval=a["n_eval"], generate=a["generate"])
    return {"label": label, "seed": seed, "summary": res["summary"], "params": res["params"], "test_loss": res["mean"],
            "exact_match": res.get("exact_match_mean"), "generated_rows": res.get("generated_rows"),
            "seconds": res["seconds"][0], "budget": {k: a[k] for k in ("n_train", "epochs", "batch_size",
                                                                           "max_length", "n_eval", "generate")}}


def pairs(res: Any) -> list[tuple[str, dict[str, Any], str]]:
    """The fair protocol on a study whose baselines ran at several rates (``--enqueue`` of them at x0.5 and x2 beside
    ``baselines``' x1): per baseline, its best rate (label ``baseline NAME xM``), then the study's answer under that
    baseline's trainable parameters (:meth:`autopeft.result.SearchResult.best_trial`, what ``autopeft best
    --max-params`` returns; label ``found #N``, or a baseline's own label when it is a baseline's best rate).
    Entries come in pairs (baseline, answer); each is (label, candidate, the baseline's name)."""
    from autopeft.result import structure_key
    from autopeft.storage import A

    trials = res.complete_trials()
    names = {structure_key(t): str(res.seeded_by(t))[len("baseline:"):] for t in trials
             if str(res.seeded_by(t) or "").startswith("baseline:")}
    sign = 1.0 if res.objectives[0] == "loss" else -1.0  # the best rate first
    bases: dict[int, tuple[str, Any, str]] = {}  # trial number -> (label, trial, name)
    for key, name in names.items():
        base = min((t for t in trials if structure_key(t) == key), key=lambda t: sign * t.values[0])
        m = base.user_attrs[A.CANDIDATE].get("lr_multiplier", 1.0)
        bases[base.number] = (f"baseline {name} x{m:g} (search loss {base.values[0]:.4f})", base, name)
    out: list[tuple[str, dict[str, Any], str]] = []
    for label, base, name in bases.values():
        out.append((label, base.user_attrs[A.CANDIDATE], name))
        ans = res.best_trial(max_params=base.user_attrs[A.PARAMS])
        ans_label = bases[ans.number][0] if ans.number in bases else (
            f"found #{ans.number} (search loss {ans.values[0]:.4f})")
        out.append((ans_label, ans.user_attrs[A.CANDIDATE], name))
    return out


def run(a: argparse.Namespace) -> None:
    import optuna

    from autopeft.storage import A, get_storage
    from autopeft.result import SearchResult

    res = None if a.config else SearchResult(
        optuna.load_study(study_name=a.study, storage=get_storage(a.storage, create=False)), a.storage)
    if res is None:
        configs = a.configs
    elif a.vs_baselines:
        configs = list({lbl: (lbl, c) for lbl, c, _ in pairs(res)}.values())  # an answer shared by two is trained once
    else:
        configs = [("lora r=8 q,v", _lora(8)), ("lora r=32 q,v", _lora(32))]
        for t in res.front_trials()[:a.found]:  # the lowest search losses first
            configs.append((f"found #{t.number} (search loss {t.values[0]:.4f})", t.user_attrs[A.CANDIDATE]))
    out = Path(a.out)
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.is_file() else []
    done = {(r["label"], r.get("seed", 0)) for r in rows}
    todo = [(lbl, c, sd) for sd in a.seeds for lbl, c in configs if (lbl, sd) not in done]
    budget = {"n_train": a.n_train, "epochs": a.epochs, "batch_size": a.batch_size, "max_length": a.max_length,
              "n_eval": a.n_eval, "generate": a.generate, "data_dir": a.data_dir}
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futs = [pool.submit(_one, lbl, c, budget, sd) for lbl, c, sd in todo]
        for f in futs:
            r = f.result()
            with out.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)


def configs_from(path: str) -> list[tuple[str, dict[str, Any]]]:
    """``--config FILE``: (label, candidate) for each entry of a YAML/JSON list of candidates (as ``--enqueue``
    reads), each entry's optional ``label`` key naming it (default: its summary)."""
    from autopeft.candidate import Candidate
    from autopeft.yamlio import load_yaml

    entries = load_yaml(Path(path), "--config file", 1 << 20)
    out = []
    for e in entries if isinstance(entries, list) else [entries]:
        e = dict(e)
        label = e.pop("label", None)
        cand = Candidate.from_dict(e)
        out.append((str(label or cand.summary()), cand.to_dict()))
    return out


def _seeds(text: str) -> list[int]:
    """``--seeds``: comma-separated integers."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1, got {text!r}") from None


def verdict(diffs: list[float]) -> str:
    """A pair's call from its per-seed differences of test loss (answer - baseline): better only when every seed
    agrees, else a tie."""
    if diffs and all(d < 0 for d in diffs):
        return "answer better"
    if diffs and all(d > 0 for d in diffs):
        return "baseline better"
    return "tie (the seeds disagree)" if diffs else "not trained yet"


def report(a: argparse.Namespace) -> None:
    rows = [json.loads(x) for x in Path(a.out).read_text().splitlines()]
    print("| config | seed | trainable params | test loss | exact match | seconds |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        em = "" if r["exact_match"] is None else f"{r['exact_match']:.3f} ({r['generated_rows']} rows)"
        print(f"| {r['label']}: {r['summary']} | {r.get('seed', 0)} | {r['params']:,} | {r['test_loss']:.4f} | {em} "
              f"| {r['seconds']:.0f} |")
    if a.study:
        import optuna

        from autopeft.result import SearchResult
        from autopeft.storage import get_storage

        res = SearchResult(optuna.load_study(study_name=a.study, storage=get_storage(a.storage, create=False)),
                           a.storage)
        loss = {(r["label"], r.get("seed", 0)): r["test_loss"] for r in rows}
        params = {r["label"]: r["params"] for r in rows}
        pr = pairs(res)
        print("\n| baseline (best searched rate) | its test loss (mean of seeds) | the answer under its size "
              "| answer's test loss | answer - baseline, per seed | verdict |\n|---|---:|---|---:|---|---|")
        for (bl, _, name), (al, _, _) in zip(pr[0::2], pr[1::2]):
            seeds = sorted(sd for lbl, sd in loss if lbl == bl and (al, sd) in loss)
            if al == bl:
                call = "the same config" if seeds else "not trained yet"
            else:
                call = verdict([loss[al, sd] - loss[bl, sd] for sd in seeds])
            if not seeds:
                print(f"| {bl} | | {al} | | | {call} |")
                continue
            mb = sum(loss[bl, sd] for sd in seeds) / len(seeds)
            ma = sum(loss[al, sd] for sd in seeds) / len(seeds)
            diffs = ", ".join(f"{loss[al, sd] - loss[bl, sd]:+.4f}" for sd in seeds)
            print(f"| {bl}: {params[bl]:,} params | {mb:.4f} | {al}: {params[al]:,} params | {ma:.4f} | {diffs} "
                  f"| {call} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--study", help="the study whose configs to train (with --storage)")
    r.add_argument("--storage")
    r.add_argument("--config", metavar="FILE", help="train the configs of this YAML/JSON list instead of a study's "
                                                   "(each entry a candidate, with an optional label key)")
    r.add_argument("--found", type=int, default=2, help="front configs to train (lowest search loss first)")
    r.add_argument("--vs-baselines", action="store_true",
                   help="train each baseline at its best searched rate and the study's answer under its size "
                        "(instead of LoRA r=8 / r=32 and --found front configs)")
    r.add_argument("--n-train", type=int, default=256)
    r.add_argument("--epochs", type=float, default=1.0)
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument("--max-length", type=int, default=256)
    r.add_argument("--n-eval", type=int, default=100)
    r.add_argument("--generate", type=int, default=30)
    r.add_argument("--seeds", type=_seeds, default=[0],
                   help="training seeds, comma-separated (each config once per seed; default 0)")
    r.add_argument("--data-dir", default=DATA)
    r.add_argument("--out", required=True)
    rp = sub.add_parser("report")
    rp.add_argument("--out", required=True)
    rp.add_argument("--study", help="with --storage: pair each baseline with the answer under its size (--vs-baselines)")
    rp.add_argument("--storage")
    a = p.parse_args()
    if a.cmd == "run" and not a.config and not (a.study and a.storage):
        r.error("give --study and --storage (the study whose configs to train) or --config FILE")
    if a.cmd == "run" and a.config:
        from autopeft.errors import ConfigError

        try:
            a.configs = configs_from(a.config)
        except (ValueError, ConfigError) as exc:
            r.error(f"--config {a.config}: {exc}")
    if a.cmd == "report" and bool(a.study) != bool(a.storage):
        rp.error("--study and --storage go together (the study whose baselines the rows pair)")
    run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    main()
