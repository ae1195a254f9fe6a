from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="EvalPrompt")


@_attrs_define
class EvalPrompt:
    """An evaluation prompt with its expected answer (exact match after normalisation).

    Attributes:
        answer (str):
        prompt (str):
    """

    answer: str
    prompt: str

    def to_dict(self) -> dict[str, Any]:
        answer = self.answer

        prompt = self.prompt

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "answer": answer,
                "prompt": prompt,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        answer = d.pop("answer")

        prompt = d.pop("prompt")

        eval_prompt = cls(
            answer=answer,
            prompt=prompt,
        )

        return eval_prompt
