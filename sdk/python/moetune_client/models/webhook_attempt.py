from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="WebhookAttempt")


@_attrs_define
class WebhookAttempt:
    """One HTTP attempt to deliver an event.

    Attributes:
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        duration_ms (int):
        endpoint_id (str):
        event_id (str):
        id (str): `atmpt_…`
        object_ (str): Always `webhook_attempt`.
        status (str): `succeeded` (a 2xx answer) or `failed`.
        trigger (str): `scheduled` or `manual` (a redelivery the tenant asked for).
        error (None | str | Unset): Why no answer came.
        response_body (None | str | Unset): The first KiB of the answer.
        response_status_code (int | None | Unset): Null when no answer came (connection refused, timeout, address
            refused).
    """

    created_at: int
    duration_ms: int
    endpoint_id: str
    event_id: str
    id: str
    object_: str
    status: str
    trigger: str
    error: None | str | Unset = UNSET
    response_body: None | str | Unset = UNSET
    response_status_code: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at

        duration_ms = self.duration_ms

        endpoint_id = self.endpoint_id

        event_id = self.event_id

        id = self.id

        object_ = self.object_

        status = self.status

        trigger = self.trigger

        error: None | str | Unset
        if isinstance(self.error, Unset):
            error = UNSET
        else:
            error = self.error

        response_body: None | str | Unset
        if isinstance(self.response_body, Unset):
            response_body = UNSET
        else:
            response_body = self.response_body

        response_status_code: int | None | Unset
        if isinstance(self.response_status_code, Unset):
            response_status_code = UNSET
        else:
            response_status_code = self.response_status_code

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "duration_ms": duration_ms,
                "endpoint_id": endpoint_id,
                "event_id": event_id,
                "id": id,
                "object": object_,
                "status": status,
                "trigger": trigger,
            }
        )
        if error is not UNSET:
            field_dict["error"] = error
        if response_body is not UNSET:
            field_dict["response_body"] = response_body
        if response_status_code is not UNSET:
            field_dict["response_status_code"] = response_status_code

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        created_at = d.pop("created_at")

        duration_ms = d.pop("duration_ms")

        endpoint_id = d.pop("endpoint_id")

        event_id = d.pop("event_id")

        id = d.pop("id")

        object_ = d.pop("object")

        status = d.pop("status")

        trigger = d.pop("trigger")

        def _parse_error(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        error = _parse_error(d.pop("error", UNSET))

        def _parse_response_body(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        response_body = _parse_response_body(d.pop("response_body", UNSET))

        def _parse_response_status_code(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        response_status_code = _parse_response_status_code(
            d.pop("response_status_code", UNSET)
        )

        webhook_attempt = cls(
            created_at=created_at,
            duration_ms=duration_ms,
            endpoint_id=endpoint_id,
            event_id=event_id,
            id=id,
            object_=object_,
            status=status,
            trigger=trigger,
            error=error,
            response_body=response_body,
            response_status_code=response_status_code,
        )

        webhook_attempt.additional_properties = d
        return webhook_attempt

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
