from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="LayerExpertUsage")


@_attrs_define
class LayerExpertUsage:
    """One MoE layer at one check.

    Attributes:
        avg_token_entropy (float): Mean entropy of the per-token router distribution.
        counts (list[int]): Routed (token, choice) pairs per expert, by expert index.
        entropy_norm (float): Entropy of `shares` divided by ln(experts): 1 = uniform use, 0 = one expert takes
            everything.
        kl_to_uniform (float):
        layer (int): The decoder layer's index in the model.
        shares (list[float]): `counts` as fractions of the layer's routed pairs, by expert index.
        top1_share (float): The busiest expert's share.
        base_agreement (float | None | Unset): Fraction of validation tokens this layer sends to the same top-k experts
            as the base model.
    """

    avg_token_entropy: float
    counts: list[int]
    entropy_norm: float
    kl_to_uniform: float
    layer: int
    shares: list[float]
    top1_share: float
    base_agreement: float | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        avg_token_entropy = self.avg_token_entropy

        counts = self.counts

        entropy_norm = self.entropy_norm

        kl_to_uniform = self.kl_to_uniform

        layer = self.layer

        shares = self.shares

        top1_share = self.top1_share

        base_agreement: float | None | Unset
        if isinstance(self.base_agreement, Unset):
            base_agreement = UNSET
        else:
            base_agreement = self.base_agreement

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "avg_token_entropy": avg_token_entropy,
                "counts": counts,
                "entropy_norm": entropy_norm,
                "kl_to_uniform": kl_to_uniform,
                "layer": layer,
                "shares": shares,
                "top1_share": top1_share,
            }
        )
        if base_agreement is not UNSET:
            field_dict["base_agreement"] = base_agreement

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        avg_token_entropy = d.pop("avg_token_entropy")

        counts = cast(list[int], d.pop("counts"))

        entropy_norm = d.pop("entropy_norm")

        kl_to_uniform = d.pop("kl_to_uniform")

        layer = d.pop("layer")

        shares = cast(list[float], d.pop("shares"))

        top1_share = d.pop("top1_share")

        def _parse_base_agreement(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        base_agreement = _parse_base_agreement(d.pop("base_agreement", UNSET))

        layer_expert_usage = cls(
            avg_token_entropy=avg_token_entropy,
            counts=counts,
            entropy_norm=entropy_norm,
            kl_to_uniform=kl_to_uniform,
            layer=layer,
            shares=shares,
            top1_share=top1_share,
            base_agreement=base_agreement,
        )

        layer_expert_usage.additional_properties = d
        return layer_expert_usage

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
