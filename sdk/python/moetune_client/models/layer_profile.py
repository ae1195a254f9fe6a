from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="LayerProfile")


@_attrs_define
class LayerProfile:
    """The routing of one MoE layer. Shares are fractions of the layer's assignments: `top1_share` of
    the tokens' first choices, `topk_share` of all `tokens × top_k` choices; each sums to 1.

        Attributes:
            dead_experts (list[int]): Experts whose `topk_share` is below `dead_share`.
            entropy_norm (float): Entropy of `topk_share` over ln(experts): 1 when routing is uniform, 0 when one expert
                gets all.
            kl_to_uniform (float): KL divergence of `topk_share` from uniform, in nats.
            layer (int): Decoder layer index.
            top1_share (list[float]):
            topk_share (list[float]):
    """

    dead_experts: list[int]
    entropy_norm: float
    kl_to_uniform: float
    layer: int
    top1_share: list[float]
    topk_share: list[float]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        dead_experts = self.dead_experts

        entropy_norm = self.entropy_norm

        kl_to_uniform = self.kl_to_uniform

        layer = self.layer

        top1_share = self.top1_share

        topk_share = self.topk_share

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "dead_experts": dead_experts,
                "entropy_norm": entropy_norm,
                "kl_to_uniform": kl_to_uniform,
                "layer": layer,
                "top1_share": top1_share,
                "topk_share": topk_share,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        dead_experts = cast(list[int], d.pop("dead_experts"))

        entropy_norm = d.pop("entropy_norm")

        kl_to_uniform = d.pop("kl_to_uniform")

        layer = d.pop("layer")

        top1_share = cast(list[float], d.pop("top1_share"))

        topk_share = cast(list[float], d.pop("topk_share"))

        layer_profile = cls(
            dead_experts=dead_experts,
            entropy_norm=entropy_norm,
            kl_to_uniform=kl_to_uniform,
            layer=layer,
            top1_share=top1_share,
            topk_share=topk_share,
        )

        layer_profile.additional_properties = d
        return layer_profile

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
