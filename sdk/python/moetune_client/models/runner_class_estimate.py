from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.throughput import Throughput


T = TypeVar("T", bound="RunnerClassEstimate")


@_attrs_define
class RunnerClassEstimate:
    """Registered runners of one class and what the job would do on them.

    Attributes:
        class_ (str): `cpu`, or `cuda:` and the GPU model the operator named.
        device (str): `cpu` or `cuda`.
        fits (bool):
        needed_memory_bytes (int): The job's memory on this class (`requirements` on its device).
        runners (int): Registered runners of the class that are not lost.
        training_memory_bytes (int): The most training memory one of them has (one GPU's, or the host's).
        expected_duration_seconds (float | None | Unset): Overhead plus the expected trained tokens at the measured
            rate; null without a measurement.
        gpu_hours (float | None | Unset): `expected_duration_seconds × world_size / 3600` on a CUDA class; null on CPU
            or without a measurement.
        measured (None | Throughput | Unset):
        reason (None | str | Unset): Why the class does not fit; null when it does.
    """

    class_: str
    device: str
    fits: bool
    needed_memory_bytes: int
    runners: int
    training_memory_bytes: int
    expected_duration_seconds: float | None | Unset = UNSET
    gpu_hours: float | None | Unset = UNSET
    measured: None | Throughput | Unset = UNSET
    reason: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.throughput import Throughput

        class_ = self.class_

        device = self.device

        fits = self.fits

        needed_memory_bytes = self.needed_memory_bytes

        runners = self.runners

        training_memory_bytes = self.training_memory_bytes

        expected_duration_seconds: float | None | Unset
        if isinstance(self.expected_duration_seconds, Unset):
            expected_duration_seconds = UNSET
        else:
            expected_duration_seconds = self.expected_duration_seconds

        gpu_hours: float | None | Unset
        if isinstance(self.gpu_hours, Unset):
            gpu_hours = UNSET
        else:
            gpu_hours = self.gpu_hours

        measured: dict[str, Any] | None | Unset
        if isinstance(self.measured, Unset):
            measured = UNSET
        elif isinstance(self.measured, Throughput):
            measured = self.measured.to_dict()
        else:
            measured = self.measured

        reason: None | str | Unset
        if isinstance(self.reason, Unset):
            reason = UNSET
        else:
            reason = self.reason

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "class": class_,
                "device": device,
                "fits": fits,
                "needed_memory_bytes": needed_memory_bytes,
                "runners": runners,
                "training_memory_bytes": training_memory_bytes,
            }
        )
        if expected_duration_seconds is not UNSET:
            field_dict["expected_duration_seconds"] = expected_duration_seconds
        if gpu_hours is not UNSET:
            field_dict["gpu_hours"] = gpu_hours
        if measured is not UNSET:
            field_dict["measured"] = measured
        if reason is not UNSET:
            field_dict["reason"] = reason

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.throughput import Throughput

        d = dict(src_dict)
        class_ = d.pop("class")

        device = d.pop("device")

        fits = d.pop("fits")

        needed_memory_bytes = d.pop("needed_memory_bytes")

        runners = d.pop("runners")

        training_memory_bytes = d.pop("training_memory_bytes")

        def _parse_expected_duration_seconds(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        expected_duration_seconds = _parse_expected_duration_seconds(
            d.pop("expected_duration_seconds", UNSET)
        )

        def _parse_gpu_hours(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        gpu_hours = _parse_gpu_hours(d.pop("gpu_hours", UNSET))

        def _parse_measured(data: object) -> None | Throughput | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                measured_type_1 = Throughput.from_dict(data)

                return measured_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Throughput | Unset, data)

        measured = _parse_measured(d.pop("measured", UNSET))

        def _parse_reason(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        reason = _parse_reason(d.pop("reason", UNSET))

        runner_class_estimate = cls(
            class_=class_,
            device=device,
            fits=fits,
            needed_memory_bytes=needed_memory_bytes,
            runners=runners,
            training_memory_bytes=training_memory_bytes,
            expected_duration_seconds=expected_duration_seconds,
            gpu_hours=gpu_hours,
            measured=measured,
            reason=reason,
        )

        runner_class_estimate.additional_properties = d
        return runner_class_estimate

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
