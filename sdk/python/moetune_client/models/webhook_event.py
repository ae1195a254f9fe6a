from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.webhook_event_data import WebhookEventData


T = TypeVar("T", bound="WebhookEvent")


@_attrs_define
class WebhookEvent:
    """An event, as its webhook body has it (OpenAI's event shape).

    Attributes:
        created_at (int):
        data (WebhookEventData): `{"id": <job id>}`, plus the checkpoint's or alert's figures for those types.
        id (str): `evt_…`; also the `webhook-id` header of its deliveries.
        object_ (str): Always `event`.
        type_ (str): fine_tuning.job.running | succeeded | failed | cancelled, checkpoint.created or monitor.alert.
    """

    created_at: int
    data: WebhookEventData
    id: str
    object_: str
    type_: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at

        data = self.data.to_dict()

        id = self.id

        object_ = self.object_

        type_ = self.type_

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "data": data,
                "id": id,
                "object": object_,
                "type": type_,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.webhook_event_data import WebhookEventData

        d = dict(src_dict)
        created_at = d.pop("created_at")

        data = WebhookEventData.from_dict(d.pop("data"))

        id = d.pop("id")

        object_ = d.pop("object")

        type_ = d.pop("type")

        webhook_event = cls(
            created_at=created_at,
            data=data,
            id=id,
            object_=object_,
            type_=type_,
        )

        webhook_event.additional_properties = d
        return webhook_event

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
