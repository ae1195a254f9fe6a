from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.mxfp_4_scale_rule import Mxfp4ScaleRule
from ..models.qat_format import QatFormat
from ..models.qat_trainable import QatTrainable
from ..types import UNSET, Unset

T = TypeVar("T", bound="QatOptions")


@_attrs_define
class QatOptions:
    """Quantization-aware training after SFT.

    Attributes:
        calibration_batches (int | Unset): Batches of training data the calibration pass runs. Default 8. Default: 8.
        format_ (None | QatFormat | Unset):
        learning_rate (float | Unset): Peak learning rate (cosine annealed). Default 1e-5. Default: 1e-05.
        mxfp4_scale_rule (Mxfp4ScaleRule | Unset): The scale of an MXFP4 block of 32 elements, a power of two, from the
            block's largest magnitude
            `amax`. Decoding is the same under both rules.
        quantize_activations (bool | Unset): NVFP4 only: also fake-quantize the experts' input activations, with per-
            tensor scales from a
            calibration pass. Default false (weight-only, `*_MLP_WEIGHT_ONLY`). Default: False.
        steps (int | Unset): Optimiser steps; 0 skips QAT (the FP4 export is then plain PTQ). Default 500. Default: 500.
        trainable (None | QatTrainable | Unset):
    """

    calibration_batches: int | Unset = 8
    format_: None | QatFormat | Unset = UNSET
    learning_rate: float | Unset = 1e-05
    mxfp4_scale_rule: Mxfp4ScaleRule | Unset = UNSET
    quantize_activations: bool | Unset = False
    steps: int | Unset = 500
    trainable: None | QatTrainable | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        calibration_batches = self.calibration_batches

        format_: None | str | Unset
        if isinstance(self.format_, Unset):
            format_ = UNSET
        elif isinstance(self.format_, QatFormat):
            format_ = self.format_.value
        else:
            format_ = self.format_

        learning_rate = self.learning_rate

        mxfp4_scale_rule: str | Unset = UNSET
        if not isinstance(self.mxfp4_scale_rule, Unset):
            mxfp4_scale_rule = self.mxfp4_scale_rule.value

        quantize_activations = self.quantize_activations

        steps = self.steps

        trainable: None | str | Unset
        if isinstance(self.trainable, Unset):
            trainable = UNSET
        elif isinstance(self.trainable, QatTrainable):
            trainable = self.trainable.value
        else:
            trainable = self.trainable

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if calibration_batches is not UNSET:
            field_dict["calibration_batches"] = calibration_batches
        if format_ is not UNSET:
            field_dict["format"] = format_
        if learning_rate is not UNSET:
            field_dict["learning_rate"] = learning_rate
        if mxfp4_scale_rule is not UNSET:
            field_dict["mxfp4_scale_rule"] = mxfp4_scale_rule
        if quantize_activations is not UNSET:
            field_dict["quantize_activations"] = quantize_activations
        if steps is not UNSET:
            field_dict["steps"] = steps
        if trainable is not UNSET:
            field_dict["trainable"] = trainable

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        calibration_batches = d.pop("calibration_batches", UNSET)

        def _parse_format_(data: object) -> None | QatFormat | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                format_type_1 = QatFormat(data)

                return format_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | QatFormat | Unset, data)

        format_ = _parse_format_(d.pop("format", UNSET))

        learning_rate = d.pop("learning_rate", UNSET)

        _mxfp4_scale_rule = d.pop("mxfp4_scale_rule", UNSET)
        mxfp4_scale_rule: Mxfp4ScaleRule | Unset
        if isinstance(_mxfp4_scale_rule, Unset):
            mxfp4_scale_rule = UNSET
        else:
            mxfp4_scale_rule = Mxfp4ScaleRule(_mxfp4_scale_rule)

        quantize_activations = d.pop("quantize_activations", UNSET)

        steps = d.pop("steps", UNSET)

        def _parse_trainable(data: object) -> None | QatTrainable | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                trainable_type_1 = QatTrainable(data)

                return trainable_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | QatTrainable | Unset, data)

        trainable = _parse_trainable(d.pop("trainable", UNSET))

        qat_options = cls(
            calibration_batches=calibration_batches,
            format_=format_,
            learning_rate=learning_rate,
            mxfp4_scale_rule=mxfp4_scale_rule,
            quantize_activations=quantize_activations,
            steps=steps,
            trainable=trainable,
        )

        return qat_options
