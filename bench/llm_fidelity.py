"""One low-cost SmolLM2/GSM8K trial (or the untrained reference) at a given fidelity, one thread: what set the
causal-LM CPU preset (contract.LM_CPU_FIDELITY).  Usage: python bench/llm_fidelity.py lora|ia3|prefix|lora32|ref
N_TRAIN EPOCHS BATCH MAX_LENGTH LR_SCALE [KNOBS]  (e.g. lora 64 1 4 256 2; run two side by side on the 2 cores).
KNOBS: the trial cost knobs, e.g. dtype=bfloat16 or gradient_checkpointing=1 (comma-separated)."""
import torch, sys, json
torch.set_num_threads(1)
from autopeft.contract import TrialSpec, Fidelity
from autopeft.config import data_spec_dict
from autopeft.candidate import Candidate
import autopeft.trial as T
from pathlib import Path
data = data_spec_dict("gsm8k", str(Path(__file__).resolve().parents[2] / "shared" / "data"))  # ../shared/data
which, n_train, ep, bs, ml, lrs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
C = {"lora": ({"lora": {"r": 8, "targets": ["q","v"], "alpha_ratio": 2.0, "dropout": 0.1}}, list(range(30))),
     "ia3": ({"ia3": {"targets": ["k","v","ffn_down"]}}, list(range(30))),
     "prefix": ({"prefix": {"length": 20}}, []),
     "lora32": ({"lora": {"r": 32, "targets": ["q","v"], "alpha_ratio": 2.0, "dropout": 0.1}}, list(range(30))),
     "ref": None}
knobs = dict(kv.split("=", 1) for kv in sys.argv[7].split(",")) if len(sys.argv) > 7 else {}
if "gradient_checkpointing" in knobs:
    knobs["gradient_checkpointing"] = knobs["gradient_checkpointing"] in ("1", "true")
fid = Fidelity(n_train=n_train, epochs=ep, n_eval=32, max_length=ml, batch_size=bs, memory_batch_size=8, lr_scale=lrs,
               **knobs)
if which == "ref":
    from autopeft.session import _reference_candidate
    spec = TrialSpec(trial_id=0, candidate=_reference_candidate().to_dict(), fidelity=fid.to_dict(), model="smollm2", data=data, seed=0, threads=1, purpose="reference")
else:
    m, layers = C[which]
    spec = TrialSpec(trial_id=0, candidate=Candidate.from_dict({"methods": m, "layers": layers}).to_dict(), fidelity=fid.to_dict(), model="smollm2", data=data, seed=0, threads=1)
r = T.run_trial(spec)
print(json.dumps({"which": which, "fid": sys.argv[2:], "status": r.status, "score": r.score, "reason": r.reason, "wall": round(r.wall_s,1), "train": round(r.train_s,1), "steps": r.steps, "mem_mib": (r.memory_bytes or 0)/2**20}))
