"""The rules of ARCHITECTURE.md, checked: import contracts (import-linter), what importing a module loads, the
only writer of stored attributes, no method named outside its plug-in, module sizes."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "autopeft"
HEAVY = ("torch", "optuna", "ray", "transformers", "peft")


def _loaded(code: str) -> set[str]:
    """Top-level packages among HEAVY that ``code`` leaves imported, run in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}}))"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return set(ast.literal_eval(out.strip().splitlines()[-1])) & set(HEAVY)


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports")
    assert exe is not None, "import-linter is a test dependency (pip install -e '.[test]')"
    r = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-3000:]


def test_the_cli_starts_without_the_training_stack() -> None:
    assert _loaded("import autopeft.cli; autopeft.cli.build_parser().format_help()") == set()


def test_declarations_load_no_torch() -> None:
    mods = ["autopeft.space", "autopeft.candidate", "autopeft.config", "autopeft.contract", "autopeft.methods",
            "autopeft.arch", "autopeft.executors", "autopeft.executors.local"]
    assert "torch" not in _loaded("; ".join(f"import {m}" for m in mods))
    # and a space binds and samples without it
    assert "torch" not in _loaded("import numpy as np\nfrom autopeft.space import SearchSpace\n"
                                  "SearchSpace.load('mixed').bind(12).sample(np.random.default_rng(0), 5)")


_WRITES = {"set_user_attr", "set_trial_user_attr", "set_trial_system_attr", "set_constraint", "tell",
           "set_trial_state_values", "set_metric_names", "set_system_attr", "enqueue_trial", "add_trial"}


def test_only_the_storage_layer_writes_trials() -> None:
    offenders = []
    for p in PKG.rglob("*.py"):
        if p.name in ("storage.py", "backends.py"):  # the storage layer
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _WRITES:
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.func.attr}")
    assert offenders == []


def test_no_core_module_names_a_method() -> None:
    from autopeft.methods import method_names

    names = "|".join(map(re.escape, method_names()))
    pat = re.compile(rf"""["']({names})["']""")
    space_name = re.compile(r"""(space\s*(:\s*str\s*)?=\s*|DEFAULT_SPACE\s*=\s*)["']\w+["']""")  # "lora" is also a space's name
    hits = []
    for p in PKG.rglob("*.py"):
        if "methods" in p.parts:
            continue
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if pat.search(space_name.sub("", line)):
                hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert hits == []


def test_modules_stay_small_or_say_why() -> None:
    big = []
    for p in PKG.rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400 and "over 400 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            big.append(f"{p.relative_to(ROOT)}: {len(text.splitlines())} lines")
    assert big == []


@pytest.mark.parametrize("bad,message", [
    ({"n_trials": 0}, "--trials must be an integer >= 1, got 0"),
    ({"seed": -1}, "--seed must be an integer in 0..4294967295, got -1"),
    ({"seed": 2**64}, "--seed must be an integer in 0..4294967295"),
    ({"executor": "ray", "gpus_per_trial": -1}, "--gpus-per-trial must be a finite number >= 0, got -1"),
    ({"executor": "local", "cpus_per_trial": 2}, "cpus_per_trial apply to --executor ray or ray-tune, not local"),
    ({"colour": "red"}, "unknown search option 'colour'"),
    ({"max_memory": "1e999"}, "--max-memory must be a finite number > 0"),
    ({"objectives": "params,score"}, "objectives must start with 'score'"),
    ({"no_escalate": "yes"}, "no_escalate must be true or false, got 'yes'"),
    ({"no_escalate": True, "escalate": True}, "no_escalate=True contradicts escalate=True; give one of them"),
    ({"dataset_config": "rte"}, "--dataset-config needs --dataset"),
    ({"task": "mrpc", "dataset": "glue", "dataset_config": "rte"}, "give task='mrpc' or dataset='glue:rte', not both"),
])
def test_search_options_are_validated_once_with_exact_messages(bad: dict, message: str) -> None:
    from autopeft.config import SearchConfig
    from autopeft.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        SearchConfig.from_options(**bad)
    assert message in str(exc.value)


def test_the_cli_switches_and_dataset_options_are_api_keywords_too() -> None:
    """README: the API's keywords are the CLI's options with _ for -, --no-escalate and --dataset included."""
    from autopeft.config import SearchConfig

    c = SearchConfig.from_options(no_escalate=True, no_collapse_stop=False, dataset="glue", dataset_config="rte")
    assert (c.escalate, c.collapse_stop, c.data["task"]) == (False, True, "glue:rte")
    assert SearchConfig.from_options(escalate=False).escalate is False
    assert SearchConfig.from_options(task="glue:rte", dataset="glue", dataset_config="rte").data["task"] == "glue:rte"


def test_budgets_parse_units_and_refuse_bytes_as_a_count() -> None:
    from autopeft.config import parse_budget
    from autopeft.errors import ConfigError

    assert parse_budget("1%", 22_000_000, "max-params") == 220_000
    assert parse_budget("5M", None, "max-params") == 5_000_000
    assert parse_budget("1.5GiB", None, "max-memory") == 1536
    with pytest.raises(ConfigError, match="is a size in bytes, not a parameter count"):
        parse_budget("5 MiB", None, "max-params")
    with pytest.raises(ConfigError, match="finite"):
        parse_budget("1e999", None, "max-params")


def test_an_executor_refuses_options_it_does_not_take() -> None:
    from autopeft.errors import ConfigError
    from autopeft.executors import make_executor

    with pytest.raises(ConfigError, match="executor 'local' takes no option 'cpus_per_trial'"):
        make_executor("local", 1, cpus_per_trial=0.5)


def test_the_loop_runs_on_simulated_trials(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """The whole loop (config -> session -> proposer -> executor -> store) with the simulated runner: values are
    the simulator's deterministic pseudo-values, the reference point its own, and the total exact."""
    from autopeft import api
    from autopeft.contract import TrialSpec
    from autopeft.executors import simulated

    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=7, sampler="random",
                     storage=f"sqlite:///{tmp_path / 'sim.db'}", study_name="sim", executor="inline",
                     runner=simulated.RUNNER, n_train=32, n_eval=32)
    comp = res.complete_trials()
    assert len(comp) == 7 and res.meta["chance_score"] == 0.5 and res.meta["full_memory_mib"] == 2000.0
    for t in comp:
        want = simulated.run(TrialSpec(t.number, t.user_attrs["candidate"], None, {}))
        assert t.values == [want.score, float(want.params), want.memory_bytes / 2**20]
