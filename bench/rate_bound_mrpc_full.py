"""The rate-bound check at full budget on MRPC (session 36): LoRA r=8 on q,v of every layer, which the MRPC
searches with the baselines first walked to x2 (the range's top) and which scores higher at x4 at the 2,000-row rung
(bench/tables/rate-bound-report.txt), trained at x4 with bench.retrain's full MRPC budget and path (``run_seed``,
3 epochs on every training row, seeds 0-2), beside the committed x2 rows of bench/tables/retrain-mrpc.jsonl.

    PYTHONPATH=. python bench/rate_bound_mrpc_full.py bench/tables/retrain-mrpc-rate-bound.jsonl   # repository root
"""
import json
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor


def main(out: str) -> None:
    import optuna

    from bench.lean_loop import run_seed
    from bench.retrain import FULL, _data

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.load_study(study_name="confirm-mrpc-bfirst-0", storage="sqlite:///bench/tables/confirm-mrpc-bfirst.db")
    cand = {**s.trials[14].user_attrs["candidate"], "lr_multiplier": 4.0}  # LoRA r=8 on q,v of layers 0-5, at x4
    data = _data("mrpc", "../shared/data/glue")
    full = FULL["mrpc"]
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_seed, json.dumps(cand), None, data, full["n_train"], full["epochs"], sd, 128, 32): sd
                for sd in (0, 1, 2)}
        for f in futs:
            r = f.result()
            with open(out, "a") as fh:
                fh.write(json.dumps({"name": "lora r=8 q,v x4 (beyond the range)", "candidate": cand, "seed": futs[f],
                                     "full": full, **r}) + "\n")
            print(futs[f], r.get("score"), r.get("seconds"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
