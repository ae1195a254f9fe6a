from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="TenantRequest")


@_attrs_define
class TenantRequest:
    """Body of `POST /v1/admin/tenants`: creates the tenant or updates its limits. A limit left out keeps
    its current value; `null` returns it to the server default.

        Attributes:
            name (str):
            max_concurrent_jobs (int | None | Unset):
            max_storage_bytes (int | None | Unset):
    """

    name: str
    max_concurrent_jobs: int | None | Unset = UNSET
    max_storage_bytes: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        name = self.name

        max_concurrent_jobs: int | None | Unset
        if isinstance(self.max_concurrent_jobs, Unset):
            max_concurrent_jobs = UNSET
        else:
            max_concurrent_jobs = self.max_concurrent_jobs

        max_storage_bytes: int | None | Unset
        if isinstance(self.max_storage_bytes, Unset):
            max_storage_bytes = UNSET
        else:
            max_storage_bytes = self.max_storage_bytes

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "name": name,
            }
        )
        if max_concurrent_jobs is not UNSET:
            field_dict["max_concurrent_jobs"] = max_concurrent_jobs
        if max_storage_bytes is not UNSET:
            field_dict["max_storage_bytes"] = max_storage_bytes

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        name = d.pop("name")

        def _parse_max_concurrent_jobs(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_concurrent_jobs = _parse_max_concurrent_jobs(
            d.pop("max_concurrent_jobs", UNSET)
        )

        def _parse_max_storage_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_storage_bytes = _parse_max_storage_bytes(d.pop("max_storage_bytes", UNSET))

        tenant_request = cls(
            name=name,
            max_concurrent_jobs=max_concurrent_jobs,
            max_storage_bytes=max_storage_bytes,
        )

        return tenant_request
