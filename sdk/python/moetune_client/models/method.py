from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.moe_sft_qat_options import MoeSftQatOptions
    from ..models.supervised_method import SupervisedMethod


T = TypeVar("T", bound="Method")


@_attrs_define
class Method:
    """
    Attributes:
        type_ (str): `supervised` (runs the MoE SFT→QAT workflow with defaults) or `moe_sft_qat`.
        moe_sft_qat (MoeSftQatOptions | None | Unset):
        supervised (None | SupervisedMethod | Unset):
    """

    type_: str
    moe_sft_qat: MoeSftQatOptions | None | Unset = UNSET
    supervised: None | SupervisedMethod | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.moe_sft_qat_options import MoeSftQatOptions
        from ..models.supervised_method import SupervisedMethod

        type_ = self.type_

        moe_sft_qat: dict[str, Any] | None | Unset
        if isinstance(self.moe_sft_qat, Unset):
            moe_sft_qat = UNSET
        elif isinstance(self.moe_sft_qat, MoeSftQatOptions):
            moe_sft_qat = self.moe_sft_qat.to_dict()
        else:
            moe_sft_qat = self.moe_sft_qat

        supervised: dict[str, Any] | None | Unset
        if isinstance(self.supervised, Unset):
            supervised = UNSET
        elif isinstance(self.supervised, SupervisedMethod):
            supervised = self.supervised.to_dict()
        else:
            supervised = self.supervised

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "type": type_,
            }
        )
        if moe_sft_qat is not UNSET:
            field_dict["moe_sft_qat"] = moe_sft_qat
        if supervised is not UNSET:
            field_dict["supervised"] = supervised

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.moe_sft_qat_options import MoeSftQatOptions
        from ..models.supervised_method import SupervisedMethod

        d = dict(src_dict)
        type_ = d.pop("type")

        def _parse_moe_sft_qat(data: object) -> MoeSftQatOptions | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                moe_sft_qat_type_1 = MoeSftQatOptions.from_dict(data)

                return moe_sft_qat_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(MoeSftQatOptions | None | Unset, data)

        moe_sft_qat = _parse_moe_sft_qat(d.pop("moe_sft_qat", UNSET))

        def _parse_supervised(data: object) -> None | SupervisedMethod | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                supervised_type_1 = SupervisedMethod.from_dict(data)

                return supervised_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | SupervisedMethod | Unset, data)

        supervised = _parse_supervised(d.pop("supervised", UNSET))

        method = cls(
            type_=type_,
            moe_sft_qat=moe_sft_qat,
            supervised=supervised,
        )

        return method
