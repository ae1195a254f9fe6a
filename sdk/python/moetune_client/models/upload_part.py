from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="UploadPart")


@_attrs_define
class UploadPart:
    """
    Attributes:
        bytes_ (int):
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        id (str):
        object_ (str): Always `upload.part`.
        sha256 (str): SHA-256 of the part's bytes.
        upload_id (str):
    """

    bytes_: int
    created_at: int
    id: str
    object_: str
    sha256: str
    upload_id: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        bytes_ = self.bytes_

        created_at = self.created_at

        id = self.id

        object_ = self.object_

        sha256 = self.sha256

        upload_id = self.upload_id

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "bytes": bytes_,
                "created_at": created_at,
                "id": id,
                "object": object_,
                "sha256": sha256,
                "upload_id": upload_id,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        bytes_ = d.pop("bytes")

        created_at = d.pop("created_at")

        id = d.pop("id")

        object_ = d.pop("object")

        sha256 = d.pop("sha256")

        upload_id = d.pop("upload_id")

        upload_part = cls(
            bytes_=bytes_,
            created_at=created_at,
            id=id,
            object_=object_,
            sha256=sha256,
            upload_id=upload_id,
        )

        upload_part.additional_properties = d
        return upload_part

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
