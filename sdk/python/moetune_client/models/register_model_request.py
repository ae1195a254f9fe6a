from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.register_model_request_inspect import RegisterModelRequestInspect


T = TypeVar("T", bound="RegisterModelRequest")


@_attrs_define
class RegisterModelRequest:
    """
    Attributes:
        id (str): `owner/name`: letters, digits, `-`, `_`, `.`.
        inspect (RegisterModelRequestInspect): The output of `moetune-runner inspect DIR` on the same directory.
        uri (str): `s3://bucket/prefix` of a directory with config.json, *.safetensors and tokenizer.json.
    """

    id: str
    inspect: RegisterModelRequestInspect
    uri: str

    def to_dict(self) -> dict[str, Any]:
        id = self.id

        inspect = self.inspect.to_dict()

        uri = self.uri

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "id": id,
                "inspect": inspect,
                "uri": uri,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.register_model_request_inspect import RegisterModelRequestInspect

        d = dict(src_dict)
        id = d.pop("id")

        inspect = RegisterModelRequestInspect.from_dict(d.pop("inspect"))

        uri = d.pop("uri")

        register_model_request = cls(
            id=id,
            inspect=inspect,
            uri=uri,
        )

        return register_model_request
