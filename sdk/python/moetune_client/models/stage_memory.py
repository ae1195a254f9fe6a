from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="StageMemory")


@_attrs_define
class StageMemory:
    """One stage's peak on the training device, in bytes.

    Attributes:
        activations_bytes (int): Activations kept for the backward (layer inputs only with checkpointing, plus one
            layer).
        total_bytes (int):
        trainable_bytes (int): Trainable tensors' gradients, fp32 masters (bf16) and AdamW moments; adapters included.
        trainable_params (int):
        transient_bytes (int): Held only inside one layer or one loss chunk: dequantised or fake-quantised expert
            weights kept
            for the backward, and one cross-entropy chunk's logits.
        weights_bytes (int): Model weights as held (dense in the training dtype, or experts packed).
    """

    activations_bytes: int
    total_bytes: int
    trainable_bytes: int
    trainable_params: int
    transient_bytes: int
    weights_bytes: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        activations_bytes = self.activations_bytes

        total_bytes = self.total_bytes

        trainable_bytes = self.trainable_bytes

        trainable_params = self.trainable_params

        transient_bytes = self.transient_bytes

        weights_bytes = self.weights_bytes

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "activations_bytes": activations_bytes,
                "total_bytes": total_bytes,
                "trainable_bytes": trainable_bytes,
                "trainable_params": trainable_params,
                "transient_bytes": transient_bytes,
                "weights_bytes": weights_bytes,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        activations_bytes = d.pop("activations_bytes")

        total_bytes = d.pop("total_bytes")

        trainable_bytes = d.pop("trainable_bytes")

        trainable_params = d.pop("trainable_params")

        transient_bytes = d.pop("transient_bytes")

        weights_bytes = d.pop("weights_bytes")

        stage_memory = cls(
            activations_bytes=activations_bytes,
            total_bytes=total_bytes,
            trainable_bytes=trainable_bytes,
            trainable_params=trainable_params,
            transient_bytes=transient_bytes,
            weights_bytes=weights_bytes,
        )

        stage_memory.additional_properties = d
        return stage_memory

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
