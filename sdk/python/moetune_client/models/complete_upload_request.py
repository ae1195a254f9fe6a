from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="CompleteUploadRequest")


@_attrs_define
class CompleteUploadRequest:
    """
    Attributes:
        part_ids (list[str]): Every part's id, in the order the file is made of.
        md5 (None | str | Unset): Optional MD5 of the whole file (hex), checked while assembling.
    """

    part_ids: list[str]
    md5: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        part_ids = self.part_ids

        md5: None | str | Unset
        if isinstance(self.md5, Unset):
            md5 = UNSET
        else:
            md5 = self.md5

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "part_ids": part_ids,
            }
        )
        if md5 is not UNSET:
            field_dict["md5"] = md5

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        part_ids = cast(list[str], d.pop("part_ids"))

        def _parse_md5(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        md5 = _parse_md5(d.pop("md5", UNSET))

        complete_upload_request = cls(
            part_ids=part_ids,
            md5=md5,
        )

        return complete_upload_request
