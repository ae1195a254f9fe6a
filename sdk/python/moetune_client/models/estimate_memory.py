from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.job_memory import JobMemory


T = TypeVar("T", bound="EstimateMemory")


@_attrs_define
class EstimateMemory:
    """
    Attributes:
        cpu (JobMemory): A job's memory on one device kind: each stage and the peak over them.
        cuda (JobMemory): A job's memory on one device kind: each stage and the peak over them.
    """

    cpu: JobMemory
    cuda: JobMemory
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cpu = self.cpu.to_dict()

        cuda = self.cuda.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "cpu": cpu,
                "cuda": cuda,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.job_memory import JobMemory

        d = dict(src_dict)
        cpu = JobMemory.from_dict(d.pop("cpu"))

        cuda = JobMemory.from_dict(d.pop("cuda"))

        estimate_memory = cls(
            cpu=cpu,
            cuda=cuda,
        )

        estimate_memory.additional_properties = d
        return estimate_memory

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
