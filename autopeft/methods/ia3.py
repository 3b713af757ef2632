"""IA3 (Liu et al. 2022) from HF peft: learned scaling vectors on chosen sub-modules and layers."""

from __future__ import annotations

from typing import Any, Sequence

from autopeft.arch import ArchInfo
from autopeft.methods import Baseline, ParamDecl, PeftMethod, register_method, target_regex

_FEEDFORWARD = ("ffn_up", "ffn_down")  # IA3 scales the *input* of these (the FFN activations)


@register_method
class IA3(PeftMethod):
    name = "ia3"
    uses_peft = True
    sparsifiable = False  # scaling vectors only
    default_lr = 5e-3
    aliases = {"target_modules": "targets"}
    params = {"targets": ParamDecl("targets", default=["k", "v", "ffn_down"])}

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        for layer in layers:
            for t in arch.distinct(cfg["targets"]):
                fin, fout = arch.module_in_out(t)
                shapes += [(fin,) if t in _FEEDFORWARD else (fout,)] * arch.copies(layer, t)
        return shapes

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        return {"ia3": ({"targets": ["k", "v", "ffn_down"]}, list(range(num_layers)))}

    def peft_config(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo, head: list[str]) -> Any:
        from peft import IA3Config

        ff = [t for t in cfg["targets"] if t in _FEEDFORWARD]
        # peft needs feedforward_modules to be a subset of target_modules; a regex that matches nothing is fine
        ff_regex = target_regex(arch, layers, ff) if ff else r"(?!x)x"
        return IA3Config(
            task_type="SEQ_CLS",
            target_modules=target_regex(arch, layers, cfg["targets"]),
            feedforward_modules=ff_regex,
            modules_to_save=head,
        )
