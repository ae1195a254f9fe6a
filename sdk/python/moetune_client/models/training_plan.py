from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="TrainingPlan")


@_attrs_define
class TrainingPlan:
    """The training a job's spec and dataset describe, step for step as the runner plans it.

    Attributes:
        estimated_tokens (int): `(sft_steps + qat_steps) × sequences_per_step × tokens_per_sequence`.
        qat_steps (int):
        sequences (int): Sequences the runner trains on per epoch (examples, or fewer when `packing` joins them).
        sequences_per_step (int): `batch_size × gradient_accumulation_steps`.
        sft_steps (int): `max_steps`, or `n_epochs` passes over the sequences.
        tokens_per_sequence (float): Tokens per sequence, from the file's estimate (characters / 4), cut at `seq_len`.
        training_examples (int): Examples trained on: the training file's, less the `validation_split` held out when no
            validation file is given.
    """

    estimated_tokens: int
    qat_steps: int
    sequences: int
    sequences_per_step: int
    sft_steps: int
    tokens_per_sequence: float
    training_examples: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        estimated_tokens = self.estimated_tokens

        qat_steps = self.qat_steps

        sequences = self.sequences

        sequences_per_step = self.sequences_per_step

        sft_steps = self.sft_steps

        tokens_per_sequence = self.tokens_per_sequence

        training_examples = self.training_examples

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "estimated_tokens": estimated_tokens,
                "qat_steps": qat_steps,
                "sequences": sequences,
                "sequences_per_step": sequences_per_step,
                "sft_steps": sft_steps,
                "tokens_per_sequence": tokens_per_sequence,
                "training_examples": training_examples,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        estimated_tokens = d.pop("estimated_tokens")

        qat_steps = d.pop("qat_steps")

        sequences = d.pop("sequences")

        sequences_per_step = d.pop("sequences_per_step")

        sft_steps = d.pop("sft_steps")

        tokens_per_sequence = d.pop("tokens_per_sequence")

        training_examples = d.pop("training_examples")

        training_plan = cls(
            estimated_tokens=estimated_tokens,
            qat_steps=qat_steps,
            sequences=sequences,
            sequences_per_step=sequences_per_step,
            sft_steps=sft_steps,
            tokens_per_sequence=tokens_per_sequence,
            training_examples=training_examples,
        )

        training_plan.additional_properties = d
        return training_plan

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
