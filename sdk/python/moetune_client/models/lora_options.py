from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="LoraOptions")


@_attrs_define
class LoraOptions:
    """LoRA settings (PEFT's names and meanings).

    Attributes:
        alpha (float | Unset): Scaling numerator: updates are scaled by `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
            Default 16. Default: 16.0.
        dropout (float | Unset): Dropout on the adapter's input, in [0, 1). Default 0. Default: 0.0.
        r (int | Unset): Rank. Default 8. Default: 8.
        target_experts (bool | Unset): Also adapt the routed experts' fused weights (`gate_up_proj`, `down_proj`) with
            one adapter per
            expert (PEFT `target_parameters`). The router is never a LoRA target. Default false. Default: False.
        target_modules (list[str] | Unset): Attention projections to adapt, any of `q_proj`, `k_proj`, `v_proj`,
            `o_proj`. Default all four.
        use_rslora (bool | Unset): Rank-stabilised scaling `alpha / sqrt(r)`. Default false. Default: False.
    """

    alpha: float | Unset = 16.0
    dropout: float | Unset = 0.0
    r: int | Unset = 8
    target_experts: bool | Unset = False
    target_modules: list[str] | Unset = UNSET
    use_rslora: bool | Unset = False

    def to_dict(self) -> dict[str, Any]:
        alpha = self.alpha

        dropout = self.dropout

        r = self.r

        target_experts = self.target_experts

        target_modules: list[str] | Unset = UNSET
        if not isinstance(self.target_modules, Unset):
            target_modules = self.target_modules

        use_rslora = self.use_rslora

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if alpha is not UNSET:
            field_dict["alpha"] = alpha
        if dropout is not UNSET:
            field_dict["dropout"] = dropout
        if r is not UNSET:
            field_dict["r"] = r
        if target_experts is not UNSET:
            field_dict["target_experts"] = target_experts
        if target_modules is not UNSET:
            field_dict["target_modules"] = target_modules
        if use_rslora is not UNSET:
            field_dict["use_rslora"] = use_rslora

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        alpha = d.pop("alpha", UNSET)

        dropout = d.pop("dropout", UNSET)

        r = d.pop("r", UNSET)

        target_experts = d.pop("target_experts", UNSET)

        target_modules = cast(list[str], d.pop("target_modules", UNSET))

        use_rslora = d.pop("use_rslora", UNSET)

        lora_options = cls(
            alpha=alpha,
            dropout=dropout,
            r=r,
            target_experts=target_experts,
            target_modules=target_modules,
            use_rslora=use_rslora,
        )

        return lora_options
