from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="CreateUploadRequest")


@_attrs_define
class CreateUploadRequest:
    """
    Attributes:
        bytes_ (int): Total size of the file in bytes (up to 8 GiB); the parts must add up to it.
        filename (str):
        mime_type (str): `application/jsonl` (also accepted: application/x-ndjson, application/json, text/plain).
        purpose (str): Must be `fine-tune`.
    """

    bytes_: int
    filename: str
    mime_type: str
    purpose: str

    def to_dict(self) -> dict[str, Any]:
        bytes_ = self.bytes_

        filename = self.filename

        mime_type = self.mime_type

        purpose = self.purpose

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "bytes": bytes_,
                "filename": filename,
                "mime_type": mime_type,
                "purpose": purpose,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        bytes_ = d.pop("bytes")

        filename = d.pop("filename")

        mime_type = d.pop("mime_type")

        purpose = d.pop("purpose")

        create_upload_request = cls(
            bytes_=bytes_,
            filename=filename,
            mime_type=mime_type,
            purpose=purpose,
        )

        return create_upload_request
