"""autopeft's Python API: what the CLI commands and notebooks call.

    res = autopeft.search(task="sst2", data_dir="../shared/data/glue", space="lora", n_trials=30)
    res.pareto_front; res.best_config(max_params="0.5%").save("my_config")

Every function validates its input and raises an :class:`~autopeft.errors.AutoPeftError` subclass with an exact
message for bad input.  Heavy libraries load inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

from autopeft.errors import ConfigError, StudyError

# tqdm.auto (imported by our dependencies) warns in a Jupyter kernel without ipywidgets; its plain bar works there
warnings.filterwarnings("ignore", message=r"IProgress not found")


def open_search(**options: Any) -> Any:
    """A search ready to run (:class:`autopeft.session.Search`, study opened): ``.run()`` runs it.

    Options are those of :func:`search`."""
    from autopeft.config import SearchConfig
    from autopeft.session import Search

    if options.get("progress") is None:  # by default a bar where someone watches: a terminal or a notebook
        options["progress"] = _interactive()
    search = Search(SearchConfig.from_options(**options))
    if search.config.executor == "ray-tune":  # Ray Tune drives the trials: no executor
        from autopeft.integrations.ray_tune import run_reference, run_search

        search.reference_runner, search.driver = run_reference, run_search
    return search.open()


def _interactive() -> bool:
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":  # a Jupyter kernel: tqdm draws there
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def search(model: str | None = None, task: str | None = "sst2", space: str = "lora", n_trials: int = 30,
           sampler: str = "autopeft", storage: str | None = None, study_name: str | None = None,
           **options: Any) -> Any:
    """Run (or resume) a search and return its :class:`autopeft.result.SearchResult`.

    Keyword options: ``data_dir``, ``train_file``, ``validation_file``, ``text_columns``, ``label_column``,
    ``metric``, ``task_type`` (classification, causal-lm or seq2seq; inferred); fidelity ``n_train``, ``n_eval``, ``epochs``, ``max_length``, ``batch_size``,
    ``memory_batch_size``, ``lr_scale``, ``head_lr``, ``head_lr_after_scale``; ``objectives``, ``max_params``, ``max_memory``; ``workers``,
    ``executor`` (local, ray, ray-tune, inline) and for Ray ``address``, ``cpus_per_trial``, ``gpus_per_trial``,
    ``num_cpus``; ``seed``, ``timeout``, ``trial_timeout``, ``max_failures``, ``collapse_stop`` (default True: after 10 trials all at the majority-class level, raise the trials' fidelity
    inside the study, at most twice, then stop), ``escalate`` (default True; False: stop at once instead of raising), ``pruner`` (``"none"``
    or ``"cost-sh"``: see :mod:`autopeft.pruner`), ``curve_points`` (record each trial's learning curve at N points),
    ``promote`` (rungs of higher fidelity, ``"2000x2,allx3"`` or
    ``[{"n_train": 2000, "epochs": 2}]``) and ``promote_fraction`` and ``promote_lr_scale`` (the rungs' learning-rate scale; a rung dict may give its own
    ``lr_scale``; see :mod:`autopeft.promotion`), ``refine_rate`` (``"none"``, ``"best"`` or ``"front"``: a
    learning-rate line search at the top rung, :func:`autopeft.promotion.next_rate_step`), ``n_startup``, ``learn_weight`` (the default sampler's acquisition x P(learns)^K once a trial collapsed and one learned, among the candidates within half the best expected gain: fewer collapsed trials; default 10, 0: off; stored with the study, which a resume keeps unless given), ``progress`` (default: a bar in a
    terminal or a notebook), ``trust_remote_code``; for a model whose layers or projections autopeft cannot find,
    ``layers_pattern`` (the layer list's dotted path) and ``target_modules`` (``"q=NAME,v=NAME,..."`` or a dict of
    sub-module to module name inside a layer); configs to run first: ``enqueue`` (paths, ``"baselines"``, config
    dicts or Candidates; see :mod:`autopeft.seeding`; default: a new study runs the baselines its space can express
    first, ``"none"``: nothing first) and ``warm_start`` (``"NAME"`` or ``"NAME@STORAGE_URL"``).  ``trials`` and ``study`` are accepted for ``n_trials`` and ``study_name``."""
    return open_search(model=model, task=task, space=space, n_trials=n_trials, sampler=sampler, storage=storage,
                       study_name=study_name, **options).run()


def load_study(name: str, storage: str | None = None) -> Any:
    """An existing study as a :class:`autopeft.result.SearchResult` (never creates one)."""
    from autopeft.result import load_study as _load

    return _load(name, storage)


def list_studies(storage: str | None = None) -> list[tuple[str, int, int, str]]:
    """(name, complete trials, all trials, storage URL) of each study in ``storage`` (default: every SQLite file
    under the studies directory)."""
    from autopeft.storage import list_studies as _list
    from autopeft.storage import studies_dir

    urls = [storage] if storage else [f"sqlite:///{p}" for p in sorted(studies_dir().glob("*.db"))]
    return _list(urls)


def studies_dir() -> Path:
    """Where studies are stored by default (``$AUTOPEFT_STUDIES_DIR``, else ``studies/``)."""
    from autopeft.storage import studies_dir as _dir

    return _dir()


def best_config(name: str, storage: str | None = None, max_params: Any = None, max_memory: Any = None) -> Any:
    """The best :class:`autopeft.result.FoundConfig` of a stored study under the budgets."""
    return load_study(name, storage).best_config(max_params, max_memory)


def found_config(name: str, storage: str | None = None, trial: int | None = None, max_params: Any = None,
                 max_memory: Any = None) -> Any:
    """A stored study's trial ``trial`` (it must be complete), or its best config under the budgets."""
    res = load_study(name, storage)
    if trial is None:
        return res.best_config(max_params, max_memory)
    from autopeft.candidate import Candidate
    from autopeft.result import FoundConfig
    from autopeft.storage import A

    ts = [t for t in res.study.get_trials(deepcopy=False) if t.number == trial]
    if not ts or A.CANDIDATE not in ts[0].user_attrs:
        raise StudyError(f"study {res.name!r} has no trial {trial}")
    if ts[0].state.name != "COMPLETE":
        why = ts[0].user_attrs.get(A.REASON) or ts[0].user_attrs.get(A.STATUS) or "no result"
        raise StudyError(f"trial {trial} of study {res.name!r} is {ts[0].state.name} ({why}); "
                         "export a COMPLETE trial (see `autopeft show`)")
    return FoundConfig(Candidate.from_dict(ts[0].user_attrs[A.CANDIDATE]), res.meta, ts[0], res.seeded_by(ts[0]))


def export(found: Any, directory: str | Path) -> Path:
    """Write a found config for peft / autopeft training (see :mod:`autopeft.export`)."""
    from autopeft.export import export_config

    return export_config(found, directory)


def describe_export(directory: str | Path) -> str:
    """One line: what plain peft loads from an export, and what needs autopeft."""
    from autopeft.export import describe

    return describe(directory)


def load_for_training(directory: str | Path, model: str | None = None, seed: int = 0) -> Any:
    """An export rebuilt on its base model for transformers' ``Trainer`` (see :class:`autopeft.export.Trainable`)."""
    from autopeft.export import load_for_training as _load

    return _load(directory, model, seed)


def plot(name: str, storage: str | None = None, output: str | Path = "plots") -> dict[str, Path]:
    """Write a study's Pareto front (HTML + PNG) and hypervolume curve; returns the paths."""
    from autopeft.plot import plot_study

    return plot_study(load_study(name, storage), output)


def dashboard(name: str | None = None, storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
              on_start: Any = None) -> None:
    """Serve optuna-dashboard on a study's storage until interrupted (the storage must exist; nothing is created)."""
    import socket

    from autopeft.storage import default_storage, get_storage, list_studies as _list, load_optuna_study

    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    if storage is None and name is None:
        raise ConfigError("pass --study NAME or --storage URL")
    if name is not None:
        load_optuna_study(name, storage)  # exists? (never creates)
        url = storage or default_storage(name)
    else:
        url = str(storage)
        _list([url])  # a readable storage?
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --port") from None
    from optuna_dashboard import run_server

    if on_start is not None:
        on_start(url)
    run_server(get_storage(url, create=False), host=host, port=port)


def train(config_dir: str | Path, output: str | Path, *, model: str | None = None, task: str | None = None,
          data_dir: str | None = None, train_file: str | None = None, validation_file: str | None = None,
          metric: str | None = None, epochs: float | str = "auto", n_train: int | None = None, max_length: int = 128,
          batch_size: int = 32, seeds: Sequence[int] = (0,), text_columns: Sequence[str] | str | None = None,
          label_column: str | None = None, task_type: str | None = None, **trainer: Any) -> dict[str, Any]:
    """Train an exported config at full budget with transformers' ``Trainer`` and each seed, score the validation
    split, save the model.  ``epochs``: a number, or "auto" (the default: up to 10, stopped after 2 without a better
    score on the held-out tenth of the training rows; the best epoch is kept either way).  ``trainer`` keywords:
    device, bf16, fp16, grad_accum, grad_ckpt, resume, report_to, class_weights (auto, balanced, none), lr_scale (multiplies every learning rate; "auto", the default: x1, raised
    to x2 then x4 for a seed that learns nothing by the held-out rows), head_lr (the head's rate floor, as in trials),
    training_args (a dict of any other ``TrainingArguments`` fields), progress (see
    :func:`autopeft.final.train_final`)."""
    from autopeft.builder import DEFAULT_MODEL
    from autopeft.config import data_spec_dict
    from autopeft.export import CONFIG_FILE, load_config
    from autopeft.final import train_final

    cand = load_config(config_dir)
    info_p = Path(config_dir) / CONFIG_FILE
    try:
        info = json.loads(info_p.read_text(encoding="utf-8")) if info_p.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {info_p}: {exc}; export the config again with 'autopeft export'") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{info_p} must hold a JSON object; export the config again with 'autopeft export'")
    model = model or info.get("base_model")
    model = None if model == DEFAULT_MODEL else model
    if task or train_file:
        data = data_spec_dict(task, data_dir, train_file, validation_file, text_columns, label_column,
                              task_type=task_type)
    elif isinstance(info.get("task"), dict):
        data = dict(info["task"])
        if data_dir:
            data["data_dir"] = str(Path(data_dir).resolve())
        else:
            data = data_spec_dict(data.get("task"), None, data.get("train_file"), data.get("validation_file"),
                                  data.get("text_columns"), data.get("label_column"), data.get("metric"),
                                  data.get("task_type"))
    else:
        raise ConfigError("pass --task or --train-file (the config does not say which task it was found on)")
    if metric:  # checked when the task loads
        data = {**data, "metric": metric}
    allowed = {"device", "bf16", "fp16", "grad_accum", "grad_ckpt", "resume", "report_to", "training_args", "progress",
               "generate", "n_eval", "class_weights", "lr_scale", "head_lr"}
    unknown = sorted(set(trainer) - allowed)
    if unknown:
        raise ConfigError(f"train() got unknown keyword(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    from autopeft.arch import layout_from_json

    return train_final(cand, model, data, str(output), epochs=epochs, n_train=n_train, max_length=max_length,
                       batch_size=batch_size, seeds=list(seeds), layout=layout_from_json(info.get("layout")), **trainer)
