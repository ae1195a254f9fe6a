from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.line_error import LineError


T = TypeVar("T", bound="FileObject")


@_attrs_define
class FileObject:
    """The OpenAI file object, plus what validation found.

    Attributes:
        bytes_ (int):
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        filename (str):
        id (str):
        object_ (str): Always `file`. Example: file.
        purpose (str):
        sha256 (str):
        status (str): `processed` once validated. Direct uploads are validated as they stream (an invalid one is
            refused and never stored); files assembled by the Uploads API are `uploaded` until validated,
            then `processed` or `error`.
        estimated_tokens (int | None | Unset):
        example_count (int | None | Unset):
        format_ (None | str | Unset): `chat`, `alpaca` or `prompt_completion`.
        status_details (None | str | Unset): Why the file is in `error`, with line numbers.
        validation_errors (list[LineError] | None | Unset): For a file in `error`: the first 20 offending lines.
    """

    bytes_: int
    created_at: int
    filename: str
    id: str
    object_: str
    purpose: str
    sha256: str
    status: str
    estimated_tokens: int | None | Unset = UNSET
    example_count: int | None | Unset = UNSET
    format_: None | str | Unset = UNSET
    status_details: None | str | Unset = UNSET
    validation_errors: list[LineError] | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        bytes_ = self.bytes_

        created_at = self.created_at

        filename = self.filename

        id = self.id

        object_ = self.object_

        purpose = self.purpose

        sha256 = self.sha256

        status = self.status

        estimated_tokens: int | None | Unset
        if isinstance(self.estimated_tokens, Unset):
            estimated_tokens = UNSET
        else:
            estimated_tokens = self.estimated_tokens

        example_count: int | None | Unset
        if isinstance(self.example_count, Unset):
            example_count = UNSET
        else:
            example_count = self.example_count

        format_: None | str | Unset
        if isinstance(self.format_, Unset):
            format_ = UNSET
        else:
            format_ = self.format_

        status_details: None | str | Unset
        if isinstance(self.status_details, Unset):
            status_details = UNSET
        else:
            status_details = self.status_details

        validation_errors: list[dict[str, Any]] | None | Unset
        if isinstance(self.validation_errors, Unset):
            validation_errors = UNSET
        elif isinstance(self.validation_errors, list):
            validation_errors = []
            for validation_errors_type_0_item_data in self.validation_errors:
                validation_errors_type_0_item = (
                    validation_errors_type_0_item_data.to_dict()
                )
                validation_errors.append(validation_errors_type_0_item)

        else:
            validation_errors = self.validation_errors

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "bytes": bytes_,
                "created_at": created_at,
                "filename": filename,
                "id": id,
                "object": object_,
                "purpose": purpose,
                "sha256": sha256,
                "status": status,
            }
        )
        if estimated_tokens is not UNSET:
            field_dict["estimated_tokens"] = estimated_tokens
        if example_count is not UNSET:
            field_dict["example_count"] = example_count
        if format_ is not UNSET:
            field_dict["format"] = format_
        if status_details is not UNSET:
            field_dict["status_details"] = status_details
        if validation_errors is not UNSET:
            field_dict["validation_errors"] = validation_errors

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.line_error import LineError

        d = dict(src_dict)
        bytes_ = d.pop("bytes")

        created_at = d.pop("created_at")

        filename = d.pop("filename")

        id = d.pop("id")

        object_ = d.pop("object")

        purpose = d.pop("purpose")

        sha256 = d.pop("sha256")

        status = d.pop("status")

        def _parse_estimated_tokens(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        estimated_tokens = _parse_estimated_tokens(d.pop("estimated_tokens", UNSET))

        def _parse_example_count(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        example_count = _parse_example_count(d.pop("example_count", UNSET))

        def _parse_format_(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        format_ = _parse_format_(d.pop("format", UNSET))

        def _parse_status_details(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        status_details = _parse_status_details(d.pop("status_details", UNSET))

        def _parse_validation_errors(data: object) -> list[LineError] | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                validation_errors_type_0 = []
                _validation_errors_type_0 = data
                for validation_errors_type_0_item_data in _validation_errors_type_0:
                    validation_errors_type_0_item = LineError.from_dict(
                        validation_errors_type_0_item_data
                    )

                    validation_errors_type_0.append(validation_errors_type_0_item)

                return validation_errors_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(list[LineError] | None | Unset, data)

        validation_errors = _parse_validation_errors(d.pop("validation_errors", UNSET))

        file_object = cls(
            bytes_=bytes_,
            created_at=created_at,
            filename=filename,
            id=id,
            object_=object_,
            purpose=purpose,
            sha256=sha256,
            status=status,
            estimated_tokens=estimated_tokens,
            example_count=example_count,
            format_=format_,
            status_details=status_details,
            validation_errors=validation_errors,
        )

        file_object.additional_properties = d
        return file_object

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
