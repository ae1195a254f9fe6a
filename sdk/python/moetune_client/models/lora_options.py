from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.expert_targets_type_2 import ExpertTargetsType2
    from ..models.lora_options_rank_pattern import LoraOptionsRankPattern


T = TypeVar("T", bound="LoraOptions")


@_attrs_define
class LoraOptions:
    """LoRA settings (PEFT's names and meanings).

    Attributes:
        alpha (float | Unset): Scaling numerator: updates are scaled by `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
            Default 16. Default: 16.0.
        dropout (float | Unset): Dropout on the adapter's input, in [0, 1). Default 0. Default: 0.0.
        r (int | Unset): Rank. Default 8. Default: 8.
        rank_pattern (LoraOptionsRankPattern | Unset): Per-expert ranks overriding `r`: `{"experts.3": 16}` (expert 3 of
            every layer) or
            `{"layers.1.experts.3": 16}` (one layer; wins over the former). Applies to targeted experts.
        target_experts (bool | ExpertTargetsType2 | list[list[int]] | Unset): The experts that get adapters: `true`,
            `false`, one list of expert indices per decoder layer, or
            `{"from_profile": {"min_share": x}}`.
        target_modules (list[str] | Unset): Attention projections to adapt, any of `q_proj`, `k_proj`, `v_proj`,
            `o_proj`. Default all four.
        use_rslora (bool | Unset): Rank-stabilised scaling `alpha / sqrt(r)`. Default false. Default: False.
    """

    alpha: float | Unset = 16.0
    dropout: float | Unset = 0.0
    r: int | Unset = 8
    rank_pattern: LoraOptionsRankPattern | Unset = UNSET
    target_experts: bool | ExpertTargetsType2 | list[list[int]] | Unset = UNSET
    target_modules: list[str] | Unset = UNSET
    use_rslora: bool | Unset = False

    def to_dict(self) -> dict[str, Any]:
        from ..models.expert_targets_type_2 import ExpertTargetsType2

        alpha = self.alpha

        dropout = self.dropout

        r = self.r

        rank_pattern: dict[str, Any] | Unset = UNSET
        if not isinstance(self.rank_pattern, Unset):
            rank_pattern = self.rank_pattern.to_dict()

        target_experts: bool | dict[str, Any] | list[list[int]] | Unset
        if isinstance(self.target_experts, Unset):
            target_experts = UNSET
        elif isinstance(self.target_experts, list):
            target_experts = []
            for (
                componentsschemas_expert_targets_type_1_item_data
            ) in self.target_experts:
                componentsschemas_expert_targets_type_1_item = (
                    componentsschemas_expert_targets_type_1_item_data
                )

                target_experts.append(componentsschemas_expert_targets_type_1_item)

        elif isinstance(self.target_experts, ExpertTargetsType2):
            target_experts = self.target_experts.to_dict()
        else:
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
        if rank_pattern is not UNSET:
            field_dict["rank_pattern"] = rank_pattern
        if target_experts is not UNSET:
            field_dict["target_experts"] = target_experts
        if target_modules is not UNSET:
            field_dict["target_modules"] = target_modules
        if use_rslora is not UNSET:
            field_dict["use_rslora"] = use_rslora

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.expert_targets_type_2 import ExpertTargetsType2
        from ..models.lora_options_rank_pattern import LoraOptionsRankPattern

        d = dict(src_dict)
        alpha = d.pop("alpha", UNSET)

        dropout = d.pop("dropout", UNSET)

        r = d.pop("r", UNSET)

        _rank_pattern = d.pop("rank_pattern", UNSET)
        rank_pattern: LoraOptionsRankPattern | Unset
        if isinstance(_rank_pattern, Unset):
            rank_pattern = UNSET
        else:
            rank_pattern = LoraOptionsRankPattern.from_dict(_rank_pattern)

        def _parse_target_experts(
            data: object,
        ) -> bool | ExpertTargetsType2 | list[list[int]] | Unset:
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                componentsschemas_expert_targets_type_1 = []
                _componentsschemas_expert_targets_type_1 = data
                for (
                    componentsschemas_expert_targets_type_1_item_data
                ) in _componentsschemas_expert_targets_type_1:
                    componentsschemas_expert_targets_type_1_item = cast(
                        list[int], componentsschemas_expert_targets_type_1_item_data
                    )

                    componentsschemas_expert_targets_type_1.append(
                        componentsschemas_expert_targets_type_1_item
                    )

                return componentsschemas_expert_targets_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                componentsschemas_expert_targets_type_2 = ExpertTargetsType2.from_dict(
                    data
                )

                return componentsschemas_expert_targets_type_2
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(bool | ExpertTargetsType2 | list[list[int]] | Unset, data)

        target_experts = _parse_target_experts(d.pop("target_experts", UNSET))

        target_modules = cast(list[str], d.pop("target_modules", UNSET))

        use_rslora = d.pop("use_rslora", UNSET)

        lora_options = cls(
            alpha=alpha,
            dropout=dropout,
            r=r,
            rank_pattern=rank_pattern,
            target_experts=target_experts,
            target_modules=target_modules,
            use_rslora=use_rslora,
        )

        return lora_options
