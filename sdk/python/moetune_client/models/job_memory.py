from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.training_device import TrainingDevice
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.job_memory_stages import JobMemoryStages


T = TypeVar("T", bound="JobMemory")


@_attrs_define
class JobMemory:
    """A job's memory on one device kind: each stage and the peak over them.

    Attributes:
        activation_checkpointing (bool):
        base_experts (str): `bf16`/`fp32` (dense) or the packed format of the frozen experts.
        device (TrainingDevice): The device kind an estimate is for: it decides the default precision and checkpointing.
        dtype (str):
        host_bytes (int): Host memory the merge and export take (the dense model in the training dtype, the adapters,
            one
            export shard and one expert tensor in fp32): a CUDA runner merges on the host, so this is not part of its GPU
            peak.
        peak_bytes (int):
        stages (JobMemoryStages): `sft`, `qat` (when it runs) and, on a CPU runner, `merge` (the dense model for merging
            and
            export).
        offloaded_bytes (int | Unset): Host memory each rank keeps for the whole job under `cpu_offload`: its fp32
            weight shards,
            their gradients and AdamW moments (0 without). On a CPU runner it is part of the stages.
    """

    activation_checkpointing: bool
    base_experts: str
    device: TrainingDevice
    dtype: str
    host_bytes: int
    peak_bytes: int
    stages: JobMemoryStages
    offloaded_bytes: int | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        activation_checkpointing = self.activation_checkpointing

        base_experts = self.base_experts

        device = self.device.value

        dtype = self.dtype

        host_bytes = self.host_bytes

        peak_bytes = self.peak_bytes

        stages = self.stages.to_dict()

        offloaded_bytes = self.offloaded_bytes

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "activation_checkpointing": activation_checkpointing,
                "base_experts": base_experts,
                "device": device,
                "dtype": dtype,
                "host_bytes": host_bytes,
                "peak_bytes": peak_bytes,
                "stages": stages,
            }
        )
        if offloaded_bytes is not UNSET:
            field_dict["offloaded_bytes"] = offloaded_bytes

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.job_memory_stages import JobMemoryStages

        d = dict(src_dict)
        activation_checkpointing = d.pop("activation_checkpointing")

        base_experts = d.pop("base_experts")

        device = TrainingDevice(d.pop("device"))

        dtype = d.pop("dtype")

        host_bytes = d.pop("host_bytes")

        peak_bytes = d.pop("peak_bytes")

        stages = JobMemoryStages.from_dict(d.pop("stages"))

        offloaded_bytes = d.pop("offloaded_bytes", UNSET)

        job_memory = cls(
            activation_checkpointing=activation_checkpointing,
            base_experts=base_experts,
            device=device,
            dtype=dtype,
            host_bytes=host_bytes,
            peak_bytes=peak_bytes,
            stages=stages,
            offloaded_bytes=offloaded_bytes,
        )

        job_memory.additional_properties = d
        return job_memory

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
