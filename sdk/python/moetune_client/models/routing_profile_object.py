from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_status import JobStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.job_error import JobError
    from ..models.routing_profile import RoutingProfile


T = TypeVar("T", bound="RoutingProfileObject")


@_attrs_define
class RoutingProfileObject:
    """How a base model routes a file's tokens: per MoE layer, every expert's share of the first and of
    the top-k choices, dead experts, entropy and KL divergence to uniform routing.

        Attributes:
            created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
            file_id (str):
            id (str): The job that computes it (not a fine-tuning job: the fine-tuning endpoints do not show it).
            max_examples (int):
            model (str):
            object_ (str): Always `routing_profile`.
            status (JobStatus): Lifecycle of a fine-tuning job; names and values follow the OpenAI fine-tuning API.
            error (JobError | None | Unset):
            finished_at (int | None | Unset):
            training (None | RoutingProfile | Unset):
            validation (None | RoutingProfile | Unset):
            validation_file (None | str | Unset):
    """

    created_at: int
    file_id: str
    id: str
    max_examples: int
    model: str
    object_: str
    status: JobStatus
    error: JobError | None | Unset = UNSET
    finished_at: int | None | Unset = UNSET
    training: None | RoutingProfile | Unset = UNSET
    validation: None | RoutingProfile | Unset = UNSET
    validation_file: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.job_error import JobError
        from ..models.routing_profile import RoutingProfile

        created_at = self.created_at

        file_id = self.file_id

        id = self.id

        max_examples = self.max_examples

        model = self.model

        object_ = self.object_

        status = self.status.value

        error: dict[str, Any] | None | Unset
        if isinstance(self.error, Unset):
            error = UNSET
        elif isinstance(self.error, JobError):
            error = self.error.to_dict()
        else:
            error = self.error

        finished_at: int | None | Unset
        if isinstance(self.finished_at, Unset):
            finished_at = UNSET
        else:
            finished_at = self.finished_at

        training: dict[str, Any] | None | Unset
        if isinstance(self.training, Unset):
            training = UNSET
        elif isinstance(self.training, RoutingProfile):
            training = self.training.to_dict()
        else:
            training = self.training

        validation: dict[str, Any] | None | Unset
        if isinstance(self.validation, Unset):
            validation = UNSET
        elif isinstance(self.validation, RoutingProfile):
            validation = self.validation.to_dict()
        else:
            validation = self.validation

        validation_file: None | str | Unset
        if isinstance(self.validation_file, Unset):
            validation_file = UNSET
        else:
            validation_file = self.validation_file

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "file_id": file_id,
                "id": id,
                "max_examples": max_examples,
                "model": model,
                "object": object_,
                "status": status,
            }
        )
        if error is not UNSET:
            field_dict["error"] = error
        if finished_at is not UNSET:
            field_dict["finished_at"] = finished_at
        if training is not UNSET:
            field_dict["training"] = training
        if validation is not UNSET:
            field_dict["validation"] = validation
        if validation_file is not UNSET:
            field_dict["validation_file"] = validation_file

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.job_error import JobError
        from ..models.routing_profile import RoutingProfile

        d = dict(src_dict)
        created_at = d.pop("created_at")

        file_id = d.pop("file_id")

        id = d.pop("id")

        max_examples = d.pop("max_examples")

        model = d.pop("model")

        object_ = d.pop("object")

        status = JobStatus(d.pop("status"))

        def _parse_error(data: object) -> JobError | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                error_type_1 = JobError.from_dict(data)

                return error_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobError | None | Unset, data)

        error = _parse_error(d.pop("error", UNSET))

        def _parse_finished_at(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        finished_at = _parse_finished_at(d.pop("finished_at", UNSET))

        def _parse_training(data: object) -> None | RoutingProfile | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                training_type_1 = RoutingProfile.from_dict(data)

                return training_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | RoutingProfile | Unset, data)

        training = _parse_training(d.pop("training", UNSET))

        def _parse_validation(data: object) -> None | RoutingProfile | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                validation_type_1 = RoutingProfile.from_dict(data)

                return validation_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | RoutingProfile | Unset, data)

        validation = _parse_validation(d.pop("validation", UNSET))

        def _parse_validation_file(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        validation_file = _parse_validation_file(d.pop("validation_file", UNSET))

        routing_profile_object = cls(
            created_at=created_at,
            file_id=file_id,
            id=id,
            max_examples=max_examples,
            model=model,
            object_=object_,
            status=status,
            error=error,
            finished_at=finished_at,
            training=training,
            validation=validation,
            validation_file=validation_file,
        )

        routing_profile_object.additional_properties = d
        return routing_profile_object

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
