"""Issue 19: a fresh install runs the main command. A clean clone of the committed HEAD (no untracked files, no
``../shared`` beside it) is installed into a new venv, offline, and its ``autopeft search`` with no data options runs
a real search on the packaged model and the SST-2 demo copy shipped in the package.

The venv takes the heavy dependencies (torch, transformers, peft, optuna, the packaged model) from the interpreter
running the tests (``--system-site-packages``); nothing is downloaded. About 30 s on a 2-core CPU."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDY = "all-MiniLM-L6-v2-sst2-lora"  # the main command's default study: default model, task and space

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                reason="needs git and a git checkout of autopeft")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout; its exit code and the end of its output when it failed."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{out[-6000:]}"
    return proc.stdout


def _fresh_env(venv: Path, tmp: Path) -> dict[str, str]:
    """This environment without PYTHONPATH or any AUTOPEFT_* setting, offline, with an empty Hugging Face cache and
    the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AUTOPEFT_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf_home"),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", VIRTUAL_ENV=str(venv),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


def _make_venv(venv: Path, tmp: Path, env: dict[str, str]) -> Path:
    """A venv over this interpreter's packages; its python (pip comes from those packages: no ensurepip)."""
    _ok(_run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp, env, 120))
    python = venv / "bin" / "python"
    if sys.prefix != sys.base_prefix:  # the tests run in a venv: its packages are the ones to see, not the base's
        import site

        purelib = _ok(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env, 60))
        Path(purelib.strip().splitlines()[-1], "_outer_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def test_clean_clone_in_fresh_venv_runs_main_command_offline(tmp_path: Path) -> None:
    clone, venv = tmp_path / "autopeft", tmp_path / "venv"
    env = _fresh_env(venv, tmp_path)

    # 1. the committed HEAD only, in a folder with no shared/ beside it
    _ok(_run(["git", "clone", "--quiet", "--no-local", str(REPO), str(clone)], tmp_path, env, 120))
    assert not (tmp_path / "shared").exists() and not (clone / "studies" / f"{STUDY}.db").exists()

    # 2. a fresh venv, the clone installed as the README says (pip install -e .), offline
    python = _make_venv(venv, tmp_path, env)
    _ok(_run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-e",
              str(clone)], tmp_path, env, 300))
    outside = tmp_path / "outside"  # a cwd without the clone in it (there, `import autopeft` finds the clone's folder)
    outside.mkdir()
    where = _ok(_run([str(python), "-c", "import autopeft; print(autopeft.__file__)"], outside, env, 120))
    assert Path(where.strip().splitlines()[-1]).resolve().is_relative_to(clone.resolve()), where
    autopeft = venv / "bin" / "autopeft"
    assert autopeft.is_file()

    # 3. the main command from the clone's root, no data options, the smallest real search
    proc = _run([str(autopeft), "search", "--trials", "2", "--workers", "1", "--n-train", "16", "--n-eval", "16",
                 "--epochs", "1", "--max-length", "32", "--batch-size", "8", "--no-progress"], clone, env, 600)
    _ok(proc)
    out = proc.stdout + proc.stderr

    # 4. it ran on the demo data and the packaged model, printed the front and stored the study here
    assert "demo copy of sst2 shipped with autopeft" in out, out
    assert "task sst2 (6000 train rows, 2 labels)" in out, out
    assert f"study '{STUDY}'" in out, out  # the default model's name: all-MiniLM-L6-v2
    assert "Pareto front" in proc.stdout and "2 complete trials" in proc.stdout, proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.strip().startswith("trial"))
    assert header.split()[:6] == ["trial", "summary", "score", "params", "memory_mib", "trainable_pct"], header
    assert (clone / "studies" / f"{STUDY}.db").is_file()

    shown = _ok(_run([str(autopeft), "show", "--study", STUDY, "--format", "json", "--all"], clone, env, 300))
    rows = json.loads(shown)
    assert len(rows) == 2, rows
    for row in rows:
        assert row["state"] == "COMPLETE" and row["status"] == "ok", row
        assert math.isfinite(row["score"]) and 0.0 <= row["score"] <= 1.0, row
        assert row["params"] > 0 and row["memory_mib"] > 0, row

