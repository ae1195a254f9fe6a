from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.create_job_request_metadata_type_0 import (
        CreateJobRequestMetadataType0,
    )
    from ..models.hyperparameters import Hyperparameters
    from ..models.method import Method


T = TypeVar("T", bound="CreateJobRequest")


@_attrs_define
class CreateJobRequest:
    """Body of `POST /v1/fine_tuning/jobs` (the OpenAI shape; `method.moe_sft_qat` carries MoE options).

    Attributes:
        model (str): Base model to fine-tune, e.g. `moetune/tiny-mixtral`.
        training_file (str): Id of an uploaded file with `purpose=fine-tune`.
        hyperparameters (Hyperparameters | None | Unset):
        metadata (CreateJobRequestMetadataType0 | None | Unset): Up to 16 string key-value pairs stored with the job.
        method (Method | None | Unset):
        priority (int | None | Unset): moetune: 0-9 (default 0), higher first among your own queued jobs. Between
            tenants the queue is
            fair-shared, so a priority never takes a turn from another tenant.
        seed (int | None | Unset):
        suffix (None | str | Unset): Up to 64 characters added to the fine-tuned model name.
        validation_file (None | str | Unset): Id of an uploaded `fine-tune` file used for validation loss, token
            accuracy, the expert-usage
            monitor's prompts and the evaluation report; without one, `validation_split` of the training file is held out.
    """

    model: str
    training_file: str
    hyperparameters: Hyperparameters | None | Unset = UNSET
    metadata: CreateJobRequestMetadataType0 | None | Unset = UNSET
    method: Method | None | Unset = UNSET
    priority: int | None | Unset = UNSET
    seed: int | None | Unset = UNSET
    suffix: None | str | Unset = UNSET
    validation_file: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.create_job_request_metadata_type_0 import (
            CreateJobRequestMetadataType0,
        )
        from ..models.hyperparameters import Hyperparameters
        from ..models.method import Method

        model = self.model

        training_file = self.training_file

        hyperparameters: dict[str, Any] | None | Unset
        if isinstance(self.hyperparameters, Unset):
            hyperparameters = UNSET
        elif isinstance(self.hyperparameters, Hyperparameters):
            hyperparameters = self.hyperparameters.to_dict()
        else:
            hyperparameters = self.hyperparameters

        metadata: dict[str, Any] | None | Unset
        if isinstance(self.metadata, Unset):
            metadata = UNSET
        elif isinstance(self.metadata, CreateJobRequestMetadataType0):
            metadata = self.metadata.to_dict()
        else:
            metadata = self.metadata

        method: dict[str, Any] | None | Unset
        if isinstance(self.method, Unset):
            method = UNSET
        elif isinstance(self.method, Method):
            method = self.method.to_dict()
        else:
            method = self.method

        priority: int | None | Unset
        if isinstance(self.priority, Unset):
            priority = UNSET
        else:
            priority = self.priority

        seed: int | None | Unset
        if isinstance(self.seed, Unset):
            seed = UNSET
        else:
            seed = self.seed

        suffix: None | str | Unset
        if isinstance(self.suffix, Unset):
            suffix = UNSET
        else:
            suffix = self.suffix

        validation_file: None | str | Unset
        if isinstance(self.validation_file, Unset):
            validation_file = UNSET
        else:
            validation_file = self.validation_file

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "model": model,
                "training_file": training_file,
            }
        )
        if hyperparameters is not UNSET:
            field_dict["hyperparameters"] = hyperparameters
        if metadata is not UNSET:
            field_dict["metadata"] = metadata
        if method is not UNSET:
            field_dict["method"] = method
        if priority is not UNSET:
            field_dict["priority"] = priority
        if seed is not UNSET:
            field_dict["seed"] = seed
        if suffix is not UNSET:
            field_dict["suffix"] = suffix
        if validation_file is not UNSET:
            field_dict["validation_file"] = validation_file

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.create_job_request_metadata_type_0 import (
            CreateJobRequestMetadataType0,
        )
        from ..models.hyperparameters import Hyperparameters
        from ..models.method import Method

        d = dict(src_dict)
        model = d.pop("model")

        training_file = d.pop("training_file")

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

        def _parse_metadata(
            data: object,
        ) -> CreateJobRequestMetadataType0 | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                metadata_type_0 = CreateJobRequestMetadataType0.from_dict(data)

                return metadata_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(CreateJobRequestMetadataType0 | None | Unset, data)

        metadata = _parse_metadata(d.pop("metadata", UNSET))

        def _parse_method(data: object) -> Method | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                method_type_1 = Method.from_dict(data)

                return method_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Method | None | Unset, data)

        method = _parse_method(d.pop("method", UNSET))

        def _parse_priority(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        priority = _parse_priority(d.pop("priority", UNSET))

        def _parse_seed(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        seed = _parse_seed(d.pop("seed", UNSET))

        def _parse_suffix(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        suffix = _parse_suffix(d.pop("suffix", UNSET))

        def _parse_validation_file(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        validation_file = _parse_validation_file(d.pop("validation_file", UNSET))

        create_job_request = cls(
            model=model,
            training_file=training_file,
            hyperparameters=hyperparameters,
            metadata=metadata,
            method=method,
            priority=priority,
            seed=seed,
            suffix=suffix,
            validation_file=validation_file,
        )

        return create_job_request
