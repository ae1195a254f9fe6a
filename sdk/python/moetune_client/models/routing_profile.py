from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.layer_profile import LayerProfile


T = TypeVar("T", bound="RoutingProfile")


@_attrs_define
class RoutingProfile:
    """The routing of a set of tokens through every MoE layer of one model.

    Attributes:
        dead_share (float): An expert is dead in a layer where its top-k share is below this.
        examples (int): Examples routed.
        layers (list[LayerProfile]):
        tokens (int): Tokens routed (padding excluded).
        top_k (int): Experts each token is sent to.
    """

    dead_share: float
    examples: int
    layers: list[LayerProfile]
    tokens: int
    top_k: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        dead_share = self.dead_share

        examples = self.examples

        layers = []
        for layers_item_data in self.layers:
            layers_item = layers_item_data.to_dict()
            layers.append(layers_item)

        tokens = self.tokens

        top_k = self.top_k

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "dead_share": dead_share,
                "examples": examples,
                "layers": layers,
                "tokens": tokens,
                "top_k": top_k,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.layer_profile import LayerProfile

        d = dict(src_dict)
        dead_share = d.pop("dead_share")

        examples = d.pop("examples")

        layers = []
        _layers = d.pop("layers")
        for layers_item_data in _layers:
            layers_item = LayerProfile.from_dict(layers_item_data)

            layers.append(layers_item)

        tokens = d.pop("tokens")

        top_k = d.pop("top_k")

        routing_profile = cls(
            dead_share=dead_share,
            examples=examples,
            layers=layers,
            tokens=tokens,
            top_k=top_k,
        )

        routing_profile.additional_properties = d
        return routing_profile

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
