from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="Throughput")


@_attrs_define
class Throughput:
    """What runners of one class measured on recent jobs of one model and method.

    Attributes:
        jobs (int): How many jobs the figures are the medians of.
        overhead_seconds (float): Time outside the steps: loading the model and data, evaluations, the merge, the export
            and
            the uploads.
        tokens_per_second (float): Trained tokens per second of training steps (periodic validation included).
    """

    jobs: int
    overhead_seconds: float
    tokens_per_second: float
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        jobs = self.jobs

        overhead_seconds = self.overhead_seconds

        tokens_per_second = self.tokens_per_second

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "jobs": jobs,
                "overhead_seconds": overhead_seconds,
                "tokens_per_second": tokens_per_second,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        jobs = d.pop("jobs")

        overhead_seconds = d.pop("overhead_seconds")

        tokens_per_second = d.pop("tokens_per_second")

        throughput = cls(
            jobs=jobs,
            overhead_seconds=overhead_seconds,
            tokens_per_second=tokens_per_second,
        )

        throughput.additional_properties = d
        return throughput

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
