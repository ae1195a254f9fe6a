from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.hyperparameters import Hyperparameters


T = TypeVar("T", bound="SupervisedMethod")


@_attrs_define
class SupervisedMethod:
    """OpenAI's `method.supervised`: hyperparameters here replace the legacy top-level ones.

    Attributes:
        hyperparameters (Hyperparameters | None | Unset):
    """

    hyperparameters: Hyperparameters | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.hyperparameters import Hyperparameters

        hyperparameters: dict[str, Any] | None | Unset
        if isinstance(self.hyperparameters, Unset):
            hyperparameters = UNSET
        elif isinstance(self.hyperparameters, Hyperparameters):
            hyperparameters = self.hyperparameters.to_dict()
        else:
            hyperparameters = self.hyperparameters

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if hyperparameters is not UNSET:
            field_dict["hyperparameters"] = hyperparameters

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.hyperparameters import Hyperparameters

        d = dict(src_dict)

        def _parse_hyperparameters(data: object) -> Hyperparameters | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                hyperparameters_type_1 = Hyperparameters.from_dict(data)

                return hyperparameters_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Hyperparameters | None | Unset, data)

        hyperparameters = _parse_hyperparameters(d.pop("hyperparameters", UNSET))

        supervised_method = cls(
            hyperparameters=hyperparameters,
        )

        return supervised_method
