from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="ApiKeyObject")


@_attrs_define
class ApiKeyObject:
    """An API key as the admin endpoints show it (never the secret).

    Attributes:
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        id (str): `key-<12 hex>`.
        name (str):
        object_ (str): Always `api_key`.
        redacted_value (str): The first characters of the key, to recognise it: `mtk-<12 hex>-…`.
        scopes (list[str]):
        tenant (str): Name of the tenant the key acts for.
        last_used_at (int | None | Unset):
        revoked_at (int | None | Unset):
    """

    created_at: int
    id: str
    name: str
    object_: str
    redacted_value: str
    scopes: list[str]
    tenant: str
    last_used_at: int | None | Unset = UNSET
    revoked_at: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at

        id = self.id

        name = self.name

        object_ = self.object_

        redacted_value = self.redacted_value

        scopes = self.scopes

        tenant = self.tenant

        last_used_at: int | None | Unset
        if isinstance(self.last_used_at, Unset):
            last_used_at = UNSET
        else:
            last_used_at = self.last_used_at

        revoked_at: int | None | Unset
        if isinstance(self.revoked_at, Unset):
            revoked_at = UNSET
        else:
            revoked_at = self.revoked_at

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "id": id,
                "name": name,
                "object": object_,
                "redacted_value": redacted_value,
                "scopes": scopes,
                "tenant": tenant,
            }
        )
        if last_used_at is not UNSET:
            field_dict["last_used_at"] = last_used_at
        if revoked_at is not UNSET:
            field_dict["revoked_at"] = revoked_at

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        created_at = d.pop("created_at")

        id = d.pop("id")

        name = d.pop("name")

        object_ = d.pop("object")

        redacted_value = d.pop("redacted_value")

        scopes = cast(list[str], d.pop("scopes"))

        tenant = d.pop("tenant")

        def _parse_last_used_at(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        last_used_at = _parse_last_used_at(d.pop("last_used_at", UNSET))

        def _parse_revoked_at(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        revoked_at = _parse_revoked_at(d.pop("revoked_at", UNSET))

        api_key_object = cls(
            created_at=created_at,
            id=id,
            name=name,
            object_=object_,
            redacted_value=redacted_value,
            scopes=scopes,
            tenant=tenant,
            last_used_at=last_used_at,
            revoked_at=revoked_at,
        )

        api_key_object.additional_properties = d
        return api_key_object

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
