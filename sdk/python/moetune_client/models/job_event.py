from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.job_event_data_type_0 import JobEventDataType0


T = TypeVar("T", bound="JobEvent")


@_attrs_define
class JobEvent:
    """One entry of the job's event log (OpenAI `fine_tuning.job.event`).

    Attributes:
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        id (str):
        level (str):
        message (str):
        object_ (str): Always `fine_tuning.job.event`.
        type_ (str): `message` or `metrics`.
        data (JobEventDataType0 | None | Unset):
    """

    created_at: int
    id: str
    level: str
    message: str
    object_: str
    type_: str
    data: JobEventDataType0 | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.job_event_data_type_0 import JobEventDataType0

        created_at = self.created_at

        id = self.id

        level = self.level

        message = self.message

        object_ = self.object_

        type_ = self.type_

        data: dict[str, Any] | None | Unset
        if isinstance(self.data, Unset):
            data = UNSET
        elif isinstance(self.data, JobEventDataType0):
            data = self.data.to_dict()
        else:
            data = self.data

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "id": id,
                "level": level,
                "message": message,
                "object": object_,
                "type": type_,
            }
        )
        if data is not UNSET:
            field_dict["data"] = data

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.job_event_data_type_0 import JobEventDataType0

        d = dict(src_dict)
        created_at = d.pop("created_at")

        id = d.pop("id")

        level = d.pop("level")

        message = d.pop("message")

        object_ = d.pop("object")

        type_ = d.pop("type")

        def _parse_data(data: object) -> JobEventDataType0 | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                data_type_0 = JobEventDataType0.from_dict(data)

                return data_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobEventDataType0 | None | Unset, data)

        data = _parse_data(d.pop("data", UNSET))

        job_event = cls(
            created_at=created_at,
            id=id,
            level=level,
            message=message,
            object_=object_,
            type_=type_,
            data=data,
        )

        job_event.additional_properties = d
        return job_event

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
