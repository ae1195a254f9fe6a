from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="ProfileTargets")


@_attrs_define
class ProfileTargets:
    """`target_experts: {"from_profile": …}`.

    Attributes:
        min_share (float): An expert is targeted where it receives at least this share of a layer's top-k routing
            assignments over the sampled training tokens, in (0, 1). Uniform routing gives `1 / experts`.
        max_examples (int | Unset): How many training examples (the first ones) the base model routes to measure it.
            Default 256.
    """

    min_share: float
    max_examples: int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        min_share = self.min_share

        max_examples = self.max_examples

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "min_share": min_share,
            }
        )
        if max_examples is not UNSET:
            field_dict["max_examples"] = max_examples

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        min_share = d.pop("min_share")

        max_examples = d.pop("max_examples", UNSET)

        profile_targets = cls(
            min_share=min_share,
            max_examples=max_examples,
        )

        return profile_targets
