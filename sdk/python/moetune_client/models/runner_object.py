from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.runner_info import RunnerInfo


T = TypeVar("T", bound="RunnerObject")


@_attrs_define
class RunnerObject:
    """A runner as the registry sees it.

    Attributes:
        current_jobs (list[str]): Ids of the jobs it holds.
        draining (bool):
        id (str):
        object_ (str): Always `runner`.
        state (str): `idle`, `busy`, `draining` (finishes its jobs, takes no new) or `lost` (stopped heartbeating).
        capabilities (None | RunnerInfo | Unset):
        last_heartbeat_ms (int | None | Unset): Unix milliseconds of its last heartbeat; null when it has not published
            its capabilities.
    """

    current_jobs: list[str]
    draining: bool
    id: str
    object_: str
    state: str
    capabilities: None | RunnerInfo | Unset = UNSET
    last_heartbeat_ms: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.runner_info import RunnerInfo

        current_jobs = self.current_jobs

        draining = self.draining

        id = self.id

        object_ = self.object_

        state = self.state

        capabilities: dict[str, Any] | None | Unset
        if isinstance(self.capabilities, Unset):
            capabilities = UNSET
        elif isinstance(self.capabilities, RunnerInfo):
            capabilities = self.capabilities.to_dict()
        else:
            capabilities = self.capabilities

        last_heartbeat_ms: int | None | Unset
        if isinstance(self.last_heartbeat_ms, Unset):
            last_heartbeat_ms = UNSET
        else:
            last_heartbeat_ms = self.last_heartbeat_ms

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "current_jobs": current_jobs,
                "draining": draining,
                "id": id,
                "object": object_,
                "state": state,
            }
        )
        if capabilities is not UNSET:
            field_dict["capabilities"] = capabilities
        if last_heartbeat_ms is not UNSET:
            field_dict["last_heartbeat_ms"] = last_heartbeat_ms

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.runner_info import RunnerInfo

        d = dict(src_dict)
        current_jobs = cast(list[str], d.pop("current_jobs"))

        draining = d.pop("draining")

        id = d.pop("id")

        object_ = d.pop("object")

        state = d.pop("state")

        def _parse_capabilities(data: object) -> None | RunnerInfo | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                capabilities_type_1 = RunnerInfo.from_dict(data)

                return capabilities_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | RunnerInfo | Unset, data)

        capabilities = _parse_capabilities(d.pop("capabilities", UNSET))

        def _parse_last_heartbeat_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        last_heartbeat_ms = _parse_last_heartbeat_ms(d.pop("last_heartbeat_ms", UNSET))

        runner_object = cls(
            current_jobs=current_jobs,
            draining=draining,
            id=id,
            object_=object_,
            state=state,
            capabilities=capabilities,
            last_heartbeat_ms=last_heartbeat_ms,
        )

        runner_object.additional_properties = d
        return runner_object

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
