from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.device_request import DeviceRequest
from ..types import UNSET, Unset

T = TypeVar("T", bound="JobRequirements")


@_attrs_define
class JobRequirements:
    """What a job needs from the runner that takes it.

    Attributes:
        device (DeviceRequest): Which kind of runner may take a job.
        memory_bytes (int): Estimated peak training memory on one GPU of a CUDA runner (bf16 unless the job asks for
            fp32);
            0 when the model has no recorded estimate.
        cpu_memory_bytes (int | Unset): The same on a CPU runner's host memory (fp32 unless the job asks for bf16).
            Absent in jobs
            queued before it existed: `memory_bytes` then stands for both.
        world_size (int | Unset): Runners the job trains on at once (data parallel, one rank each); the memory figures
            are one
            rank's. Absent in jobs queued before gangs: 1.
    """

    device: DeviceRequest
    memory_bytes: int
    cpu_memory_bytes: int | Unset = UNSET
    world_size: int | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        device = self.device.value

        memory_bytes = self.memory_bytes

        cpu_memory_bytes = self.cpu_memory_bytes

        world_size = self.world_size

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "device": device,
                "memory_bytes": memory_bytes,
            }
        )
        if cpu_memory_bytes is not UNSET:
            field_dict["cpu_memory_bytes"] = cpu_memory_bytes
        if world_size is not UNSET:
            field_dict["world_size"] = world_size

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        device = DeviceRequest(d.pop("device"))

        memory_bytes = d.pop("memory_bytes")

        cpu_memory_bytes = d.pop("cpu_memory_bytes", UNSET)

        world_size = d.pop("world_size", UNSET)

        job_requirements = cls(
            device=device,
            memory_bytes=memory_bytes,
            cpu_memory_bytes=cpu_memory_bytes,
            world_size=world_size,
        )

        job_requirements.additional_properties = d
        return job_requirements

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
