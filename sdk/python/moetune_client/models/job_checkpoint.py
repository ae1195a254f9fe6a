from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="JobCheckpoint")


@_attrs_define
class JobCheckpoint:
    """A resumable checkpoint (OpenAI `fine_tuning.job.checkpoint`, plus where it is stored).

    Attributes:
        attempt (int): Attempt that wrote it (a resumed attempt continues from the latest one).
        bytes_ (int):
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        fine_tuning_job_id (str):
        id (str): `ftckpt-…`: the job id and checkpoint name.
        name (str): `sft-step-000100`, `sft-final`, `qat-final`, …
        object_ (str): Always `fine_tuning.job.checkpoint`.
        stage (str): `sft` or `qat`.
        step_number (int):
        uri (str): `s3://bucket/prefix/` holding weights, optimiser state and data position.
    """

    attempt: int
    bytes_: int
    created_at: int
    fine_tuning_job_id: str
    id: str
    name: str
    object_: str
    stage: str
    step_number: int
    uri: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        attempt = self.attempt

        bytes_ = self.bytes_

        created_at = self.created_at

        fine_tuning_job_id = self.fine_tuning_job_id

        id = self.id

        name = self.name

        object_ = self.object_

        stage = self.stage

        step_number = self.step_number

        uri = self.uri

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempt": attempt,
                "bytes": bytes_,
                "created_at": created_at,
                "fine_tuning_job_id": fine_tuning_job_id,
                "id": id,
                "name": name,
                "object": object_,
                "stage": stage,
                "step_number": step_number,
                "uri": uri,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        attempt = d.pop("attempt")

        bytes_ = d.pop("bytes")

        created_at = d.pop("created_at")

        fine_tuning_job_id = d.pop("fine_tuning_job_id")

        id = d.pop("id")

        name = d.pop("name")

        object_ = d.pop("object")

        stage = d.pop("stage")

        step_number = d.pop("step_number")

        uri = d.pop("uri")

        job_checkpoint = cls(
            attempt=attempt,
            bytes_=bytes_,
            created_at=created_at,
            fine_tuning_job_id=fine_tuning_job_id,
            id=id,
            name=name,
            object_=object_,
            stage=stage,
            step_number=step_number,
            uri=uri,
        )

        job_checkpoint.additional_properties = d
        return job_checkpoint

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
