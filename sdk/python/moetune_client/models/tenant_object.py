from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar
from uuid import UUID

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="TenantObject")


@_attrs_define
class TenantObject:
    """A tenant's effective limits and current use.

    Attributes:
        active_jobs (int):
        id (UUID):
        max_concurrent_jobs (int): Jobs that may be validating, queued or running at once.
        max_storage_bytes (int): Bytes of live files the tenant may store.
        name (str):
        object_ (str): Always `tenant`.
        storage_bytes (int):
    """

    active_jobs: int
    id: UUID
    max_concurrent_jobs: int
    max_storage_bytes: int
    name: str
    object_: str
    storage_bytes: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        active_jobs = self.active_jobs

        id = str(self.id)

        max_concurrent_jobs = self.max_concurrent_jobs

        max_storage_bytes = self.max_storage_bytes

        name = self.name

        object_ = self.object_

        storage_bytes = self.storage_bytes

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "active_jobs": active_jobs,
                "id": id,
                "max_concurrent_jobs": max_concurrent_jobs,
                "max_storage_bytes": max_storage_bytes,
                "name": name,
                "object": object_,
                "storage_bytes": storage_bytes,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        active_jobs = d.pop("active_jobs")

        id = UUID(d.pop("id"))

        max_concurrent_jobs = d.pop("max_concurrent_jobs")

        max_storage_bytes = d.pop("max_storage_bytes")

        name = d.pop("name")

        object_ = d.pop("object")

        storage_bytes = d.pop("storage_bytes")

        tenant_object = cls(
            active_jobs=active_jobs,
            id=id,
            max_concurrent_jobs=max_concurrent_jobs,
            max_storage_bytes=max_storage_bytes,
            name=name,
            object_=object_,
            storage_bytes=storage_bytes,
        )

        tenant_object.additional_properties = d
        return tenant_object

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
