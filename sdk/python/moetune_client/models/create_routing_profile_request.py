from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="CreateRoutingProfileRequest")


@_attrs_define
class CreateRoutingProfileRequest:
    """`POST /v1/files/{id}/routing_profile`.

    Attributes:
        model (str): The base model whose routers route the file, e.g. `moetune/tiny-mixtral`.
        max_examples (int | None | Unset): How many examples of the file (the first ones) to route: 1 to 10000. Default
            256.
        seq_len (int | None | Unset): Tokens per example beyond which it is cut: 16 to 32768. Default 2048.
        validation_file (None | str | Unset): Another `fine-tune` file, such as a job's validation data, profiled the
            same way.
    """

    model: str
    max_examples: int | None | Unset = UNSET
    seq_len: int | None | Unset = UNSET
    validation_file: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        model = self.model

        max_examples: int | None | Unset
        if isinstance(self.max_examples, Unset):
            max_examples = UNSET
        else:
            max_examples = self.max_examples

        seq_len: int | None | Unset
        if isinstance(self.seq_len, Unset):
            seq_len = UNSET
        else:
            seq_len = self.seq_len

        validation_file: None | str | Unset
        if isinstance(self.validation_file, Unset):
            validation_file = UNSET
        else:
            validation_file = self.validation_file

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "model": model,
            }
        )
        if max_examples is not UNSET:
            field_dict["max_examples"] = max_examples
        if seq_len is not UNSET:
            field_dict["seq_len"] = seq_len
        if validation_file is not UNSET:
            field_dict["validation_file"] = validation_file

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        model = d.pop("model")

        def _parse_max_examples(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_examples = _parse_max_examples(d.pop("max_examples", UNSET))

        def _parse_seq_len(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        seq_len = _parse_seq_len(d.pop("seq_len", UNSET))

        def _parse_validation_file(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        validation_file = _parse_validation_file(d.pop("validation_file", UNSET))

        create_routing_profile_request = cls(
            model=model,
            max_examples=max_examples,
            seq_len=seq_len,
            validation_file=validation_file,
        )

        return create_routing_profile_request
