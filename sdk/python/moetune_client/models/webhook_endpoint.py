from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="WebhookEndpoint")


@_attrs_define
class WebhookEndpoint:
    """A registered endpoint.

    Attributes:
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        description (str):
        enabled (bool): False after the endpoint answered `410 Gone` (see `disabled_reason`) or was disabled by the
            tenant.
        event_types (list[str]): The event types it receives; empty: all of them.
        id (str): `we_…`
        object_ (str): Always `webhook_endpoint`.
        updated_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        url (str):
        disabled_reason (None | str | Unset):
        previous_secret_expires_at (int | None | Unset):
        secret (None | str | Unset): The signing secret (`whsec_…`): only in the answers to creation and rotation.
    """

    created_at: int
    description: str
    enabled: bool
    event_types: list[str]
    id: str
    object_: str
    updated_at: int
    url: str
    disabled_reason: None | str | Unset = UNSET
    previous_secret_expires_at: int | None | Unset = UNSET
    secret: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at

        description = self.description

        enabled = self.enabled

        event_types = self.event_types

        id = self.id

        object_ = self.object_

        updated_at = self.updated_at

        url = self.url

        disabled_reason: None | str | Unset
        if isinstance(self.disabled_reason, Unset):
            disabled_reason = UNSET
        else:
            disabled_reason = self.disabled_reason

        previous_secret_expires_at: int | None | Unset
        if isinstance(self.previous_secret_expires_at, Unset):
            previous_secret_expires_at = UNSET
        else:
            previous_secret_expires_at = self.previous_secret_expires_at

        secret: None | str | Unset
        if isinstance(self.secret, Unset):
            secret = UNSET
        else:
            secret = self.secret

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "description": description,
                "enabled": enabled,
                "event_types": event_types,
                "id": id,
                "object": object_,
                "updated_at": updated_at,
                "url": url,
            }
        )
        if disabled_reason is not UNSET:
            field_dict["disabled_reason"] = disabled_reason
        if previous_secret_expires_at is not UNSET:
            field_dict["previous_secret_expires_at"] = previous_secret_expires_at
        if secret is not UNSET:
            field_dict["secret"] = secret

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        created_at = d.pop("created_at")

        description = d.pop("description")

        enabled = d.pop("enabled")

        event_types = cast(list[str], d.pop("event_types"))

        id = d.pop("id")

        object_ = d.pop("object")

        updated_at = d.pop("updated_at")

        url = d.pop("url")

        def _parse_disabled_reason(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        disabled_reason = _parse_disabled_reason(d.pop("disabled_reason", UNSET))

        def _parse_previous_secret_expires_at(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        previous_secret_expires_at = _parse_previous_secret_expires_at(
            d.pop("previous_secret_expires_at", UNSET)
        )

        def _parse_secret(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        secret = _parse_secret(d.pop("secret", UNSET))

        webhook_endpoint = cls(
            created_at=created_at,
            description=description,
            enabled=enabled,
            event_types=event_types,
            id=id,
            object_=object_,
            updated_at=updated_at,
            url=url,
            disabled_reason=disabled_reason,
            previous_secret_expires_at=previous_secret_expires_at,
            secret=secret,
        )

        webhook_endpoint.additional_properties = d
        return webhook_endpoint

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
