from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="WebhookDelivery")


@_attrs_define
class WebhookDelivery:
    """The state of one event's delivery to one endpoint.

    Attributes:
        attempts (int): Attempts made in the current schedule.
        endpoint_id (str):
        event_id (str):
        object_ (str): Always `webhook_delivery`.
        status (str): `pending`, `delivered` or `failed`.
    """

    attempts: int
    endpoint_id: str
    event_id: str
    object_: str
    status: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        attempts = self.attempts

        endpoint_id = self.endpoint_id

        event_id = self.event_id

        object_ = self.object_

        status = self.status

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempts": attempts,
                "endpoint_id": endpoint_id,
                "event_id": event_id,
                "object": object_,
                "status": status,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        attempts = d.pop("attempts")

        endpoint_id = d.pop("endpoint_id")

        event_id = d.pop("event_id")

        object_ = d.pop("object")

        status = d.pop("status")

        webhook_delivery = cls(
            attempts=attempts,
            endpoint_id=endpoint_id,
            event_id=event_id,
            object_=object_,
            status=status,
        )

        webhook_delivery.additional_properties = d
        return webhook_delivery

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
