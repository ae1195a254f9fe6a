from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.profile_targets import ProfileTargets


T = TypeVar("T", bound="ExpertTargetsType2")


@_attrs_define
class ExpertTargetsType2:
    """The experts the training data uses, measured on the base model before training.

    Attributes:
        from_profile (ProfileTargets): `target_experts: {"from_profile": …}`.
    """

    from_profile: ProfileTargets
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from_profile = self.from_profile.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "from_profile": from_profile,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.profile_targets import ProfileTargets

        d = dict(src_dict)
        from_profile = ProfileTargets.from_dict(d.pop("from_profile"))

        expert_targets_type_2 = cls(
            from_profile=from_profile,
        )

        expert_targets_type_2.additional_properties = d
        return expert_targets_type_2

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
