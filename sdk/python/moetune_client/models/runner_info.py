from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.runner_info_labels import RunnerInfoLabels


T = TypeVar("T", bound="RunnerInfo")


@_attrs_define
class RunnerInfo:
    """What a runner declares about itself: detected hardware and the operator's settings.

    Attributes:
        device (str): `cpu` or `cuda`.
        gpu_count (int):
        gpu_memory_bytes (int): Memory of one GPU, as configured; 0 on CPU runners.
        gpu_model (str): As the operator configured it (e.g. `H100-80GB`); empty on CPU runners.
        host_memory_bytes (int): Physical memory of the host (MemTotal).
        labels (RunnerInfoLabels): Operator labels, e.g. `zone=eu-1`, for placement constraints.
        last_heartbeat_ms (int): Unix milliseconds of the heartbeat that wrote this.
        max_concurrent_jobs (int):
        methods (list[str]): SFT methods it runs (`lora`, `full`) and QAT formats it exports (`mxfp4`, `nvfp4`).
        qat_formats (list[str]):
        runner_id (str):
        started_at (int): Unix seconds.
        version (str): Version of the runner binary.
        address (str | Unset): Where the other ranks of a gang reach this runner's rendezvous (its rank-0 TCP store): a
            host
            name or address. Empty in entries written before gangs.
    """

    device: str
    gpu_count: int
    gpu_memory_bytes: int
    gpu_model: str
    host_memory_bytes: int
    labels: RunnerInfoLabels
    last_heartbeat_ms: int
    max_concurrent_jobs: int
    methods: list[str]
    qat_formats: list[str]
    runner_id: str
    started_at: int
    version: str
    address: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        device = self.device

        gpu_count = self.gpu_count

        gpu_memory_bytes = self.gpu_memory_bytes

        gpu_model = self.gpu_model

        host_memory_bytes = self.host_memory_bytes

        labels = self.labels.to_dict()

        last_heartbeat_ms = self.last_heartbeat_ms

        max_concurrent_jobs = self.max_concurrent_jobs

        methods = self.methods

        qat_formats = self.qat_formats

        runner_id = self.runner_id

        started_at = self.started_at

        version = self.version

        address = self.address

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "device": device,
                "gpu_count": gpu_count,
                "gpu_memory_bytes": gpu_memory_bytes,
                "gpu_model": gpu_model,
                "host_memory_bytes": host_memory_bytes,
                "labels": labels,
                "last_heartbeat_ms": last_heartbeat_ms,
                "max_concurrent_jobs": max_concurrent_jobs,
                "methods": methods,
                "qat_formats": qat_formats,
                "runner_id": runner_id,
                "started_at": started_at,
                "version": version,
            }
        )
        if address is not UNSET:
            field_dict["address"] = address

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.runner_info_labels import RunnerInfoLabels

        d = dict(src_dict)
        device = d.pop("device")

        gpu_count = d.pop("gpu_count")

        gpu_memory_bytes = d.pop("gpu_memory_bytes")

        gpu_model = d.pop("gpu_model")

        host_memory_bytes = d.pop("host_memory_bytes")

        labels = RunnerInfoLabels.from_dict(d.pop("labels"))

        last_heartbeat_ms = d.pop("last_heartbeat_ms")

        max_concurrent_jobs = d.pop("max_concurrent_jobs")

        methods = cast(list[str], d.pop("methods"))

        qat_formats = cast(list[str], d.pop("qat_formats"))

        runner_id = d.pop("runner_id")

        started_at = d.pop("started_at")

        version = d.pop("version")

        address = d.pop("address", UNSET)

        runner_info = cls(
            device=device,
            gpu_count=gpu_count,
            gpu_memory_bytes=gpu_memory_bytes,
            gpu_model=gpu_model,
            host_memory_bytes=host_memory_bytes,
            labels=labels,
            last_heartbeat_ms=last_heartbeat_ms,
            max_concurrent_jobs=max_concurrent_jobs,
            methods=methods,
            qat_formats=qat_formats,
            runner_id=runner_id,
            started_at=started_at,
            version=version,
            address=address,
        )

        runner_info.additional_properties = d
        return runner_info

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
