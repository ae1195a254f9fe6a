from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="ResolvedHyperparameters")


@_attrs_define
class ResolvedHyperparameters:
    """Resolved hyperparameters, echoed on the job object.

    Attributes:
        batch_size (int):
        learning_rate_multiplier (float):
        n_epochs (int):
    """

    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        batch_size = self.batch_size

        learning_rate_multiplier = self.learning_rate_multiplier

        n_epochs = self.n_epochs

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "batch_size": batch_size,
                "learning_rate_multiplier": learning_rate_multiplier,
                "n_epochs": n_epochs,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        batch_size = d.pop("batch_size")

        learning_rate_multiplier = d.pop("learning_rate_multiplier")

        n_epochs = d.pop("n_epochs")

        resolved_hyperparameters = cls(
            batch_size=batch_size,
            learning_rate_multiplier=learning_rate_multiplier,
            n_epochs=n_epochs,
        )

        resolved_hyperparameters.additional_properties = d
        return resolved_hyperparameters

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
