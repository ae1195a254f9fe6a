from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="EstimateInputs")


@_attrs_define
class EstimateInputs:
    """
    Attributes:
        batch_size (int):
        example_count (int):
        file_estimated_tokens (int): The training file's token estimate (characters / 4).
        gradient_accumulation_steps (int):
        n_epochs (int):
        packing (bool):
        qat_steps (int):
        seq_len (int):
        training_file (str):
        validation_split (float): Held out of the training file when no validation file is given.
        max_steps (int | None | Unset):
        validation_file (None | str | Unset):
    """

    batch_size: int
    example_count: int
    file_estimated_tokens: int
    gradient_accumulation_steps: int
    n_epochs: int
    packing: bool
    qat_steps: int
    seq_len: int
    training_file: str
    validation_split: float
    max_steps: int | None | Unset = UNSET
    validation_file: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        batch_size = self.batch_size

        example_count = self.example_count

        file_estimated_tokens = self.file_estimated_tokens

        gradient_accumulation_steps = self.gradient_accumulation_steps

        n_epochs = self.n_epochs

        packing = self.packing

        qat_steps = self.qat_steps

        seq_len = self.seq_len

        training_file = self.training_file

        validation_split = self.validation_split

        max_steps: int | None | Unset
        if isinstance(self.max_steps, Unset):
            max_steps = UNSET
        else:
            max_steps = self.max_steps

        validation_file: None | str | Unset
        if isinstance(self.validation_file, Unset):
            validation_file = UNSET
        else:
            validation_file = self.validation_file

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "batch_size": batch_size,
                "example_count": example_count,
                "file_estimated_tokens": file_estimated_tokens,
                "gradient_accumulation_steps": gradient_accumulation_steps,
                "n_epochs": n_epochs,
                "packing": packing,
                "qat_steps": qat_steps,
                "seq_len": seq_len,
                "training_file": training_file,
                "validation_split": validation_split,
            }
        )
        if max_steps is not UNSET:
            field_dict["max_steps"] = max_steps
        if validation_file is not UNSET:
            field_dict["validation_file"] = validation_file

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        batch_size = d.pop("batch_size")

        example_count = d.pop("example_count")

        file_estimated_tokens = d.pop("file_estimated_tokens")

        gradient_accumulation_steps = d.pop("gradient_accumulation_steps")

        n_epochs = d.pop("n_epochs")

        packing = d.pop("packing")

        qat_steps = d.pop("qat_steps")

        seq_len = d.pop("seq_len")

        training_file = d.pop("training_file")

        validation_split = d.pop("validation_split")

        def _parse_max_steps(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_steps = _parse_max_steps(d.pop("max_steps", UNSET))

        def _parse_validation_file(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        validation_file = _parse_validation_file(d.pop("validation_file", UNSET))

        estimate_inputs = cls(
            batch_size=batch_size,
            example_count=example_count,
            file_estimated_tokens=file_estimated_tokens,
            gradient_accumulation_steps=gradient_accumulation_steps,
            n_epochs=n_epochs,
            packing=packing,
            qat_steps=qat_steps,
            seq_len=seq_len,
            training_file=training_file,
            validation_split=validation_split,
            max_steps=max_steps,
            validation_file=validation_file,
        )

        estimate_inputs.additional_properties = d
        return estimate_inputs

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
