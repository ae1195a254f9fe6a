from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_status import JobStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.artifact import Artifact
    from ..models.job_error import JobError
    from ..models.job_object_metadata import JobObjectMetadata
    from ..models.job_object_method import JobObjectMethod
    from ..models.job_object_result_type_0 import JobObjectResultType0
    from ..models.job_requirements import JobRequirements
    from ..models.resolved_hyperparameters import ResolvedHyperparameters


T = TypeVar("T", bound="JobObject")


@_attrs_define
class JobObject:
    """The OpenAI fine-tuning job object, with moetune's additions (`attempt`, `artifacts`, `result`).

    Attributes:
        artifacts (list[Artifact]): Files the job produced, downloadable at
            `/v1/fine_tuning/jobs/{id}/artifacts/{name}/content`.
        attempt (int): Fencing counter: 1 on the first run, +1 each time the job is handed out again (its runner was
            lost,
            or it was paused before starting, or resumed).
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        hyperparameters (ResolvedHyperparameters): Resolved hyperparameters, echoed on the job object.
        id (str):
        integrations (list[Any]):
        metadata (JobObjectMetadata):
        method (JobObjectMethod): The method as created (`supervised` or `moe_sft_qat`); `moe_sft_qat` holds every
            resolved
            workflow option either way.
        model (str):
        object_ (str): Always `fine_tuning.job`.
        organization_id (str):
        priority (int): 0-9, higher first among this tenant's queued jobs.
        requirements (JobRequirements): What a job needs from the runner that takes it.
        result_files (list[str]):
        seed (int):
        status (JobStatus): Lifecycle of a fine-tuning job; names and values follow the OpenAI fine-tuning API.
        training_file (str):
        error (JobError | None | Unset):
        estimated_finish (int | None | Unset):
        fine_tuned_model (None | str | Unset):
        finished_at (int | None | Unset):
        ranks (list[str] | None | Unset): moetune: the runners a job with `world_size` > 1 trains on, by rank (rank 0
            first); absent on
            one runner and while it waits.
        result (JobObjectResultType0 | None | Unset): Summary written by the runner at the end (losses, steps, the
            evaluation table, timings).
        status_details (None | str | Unset): moetune: why the job is waiting, when it needs saying (e.g. no registered
            runner fits it).
        stop_reason (None | str | Unset): Why training ended: `completed`, or `early_stop_router_collapse` when the
            expert-usage monitor stopped it.
        trained_tokens (int | None | Unset):
        user_provided_suffix (None | str | Unset):
        validation_file (None | str | Unset):
    """

    artifacts: list[Artifact]
    attempt: int
    created_at: int
    hyperparameters: ResolvedHyperparameters
    id: str
    integrations: list[Any]
    metadata: JobObjectMetadata
    method: JobObjectMethod
    model: str
    object_: str
    organization_id: str
    priority: int
    requirements: JobRequirements
    result_files: list[str]
    seed: int
    status: JobStatus
    training_file: str
    error: JobError | None | Unset = UNSET
    estimated_finish: int | None | Unset = UNSET
    fine_tuned_model: None | str | Unset = UNSET
    finished_at: int | None | Unset = UNSET
    ranks: list[str] | None | Unset = UNSET
    result: JobObjectResultType0 | None | Unset = UNSET
    status_details: None | str | Unset = UNSET
    stop_reason: None | str | Unset = UNSET
    trained_tokens: int | None | Unset = UNSET
    user_provided_suffix: None | str | Unset = UNSET
    validation_file: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.job_error import JobError
        from ..models.job_object_result_type_0 import JobObjectResultType0

        artifacts = []
        for artifacts_item_data in self.artifacts:
            artifacts_item = artifacts_item_data.to_dict()
            artifacts.append(artifacts_item)

        attempt = self.attempt

        created_at = self.created_at

        hyperparameters = self.hyperparameters.to_dict()

        id = self.id

        integrations = self.integrations

        metadata = self.metadata.to_dict()

        method = self.method.to_dict()

        model = self.model

        object_ = self.object_

        organization_id = self.organization_id

        priority = self.priority

        requirements = self.requirements.to_dict()

        result_files = self.result_files

        seed = self.seed

        status = self.status.value

        training_file = self.training_file

        error: dict[str, Any] | None | Unset
        if isinstance(self.error, Unset):
            error = UNSET
        elif isinstance(self.error, JobError):
            error = self.error.to_dict()
        else:
            error = self.error

        estimated_finish: int | None | Unset
        if isinstance(self.estimated_finish, Unset):
            estimated_finish = UNSET
        else:
            estimated_finish = self.estimated_finish

        fine_tuned_model: None | str | Unset
        if isinstance(self.fine_tuned_model, Unset):
            fine_tuned_model = UNSET
        else:
            fine_tuned_model = self.fine_tuned_model

        finished_at: int | None | Unset
        if isinstance(self.finished_at, Unset):
            finished_at = UNSET
        else:
            finished_at = self.finished_at

        ranks: list[str] | None | Unset
        if isinstance(self.ranks, Unset):
            ranks = UNSET
        elif isinstance(self.ranks, list):
            ranks = self.ranks

        else:
            ranks = self.ranks

        result: dict[str, Any] | None | Unset
        if isinstance(self.result, Unset):
            result = UNSET
        elif isinstance(self.result, JobObjectResultType0):
            result = self.result.to_dict()
        else:
            result = self.result

        status_details: None | str | Unset
        if isinstance(self.status_details, Unset):
            status_details = UNSET
        else:
            status_details = self.status_details

        stop_reason: None | str | Unset
        if isinstance(self.stop_reason, Unset):
            stop_reason = UNSET
        else:
            stop_reason = self.stop_reason

        trained_tokens: int | None | Unset
        if isinstance(self.trained_tokens, Unset):
            trained_tokens = UNSET
        else:
            trained_tokens = self.trained_tokens

        user_provided_suffix: None | str | Unset
        if isinstance(self.user_provided_suffix, Unset):
            user_provided_suffix = UNSET
        else:
            user_provided_suffix = self.user_provided_suffix

        validation_file: None | str | Unset
        if isinstance(self.validation_file, Unset):
            validation_file = UNSET
        else:
            validation_file = self.validation_file

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "artifacts": artifacts,
                "attempt": attempt,
                "created_at": created_at,
                "hyperparameters": hyperparameters,
                "id": id,
                "integrations": integrations,
                "metadata": metadata,
                "method": method,
                "model": model,
                "object": object_,
                "organization_id": organization_id,
                "priority": priority,
                "requirements": requirements,
                "result_files": result_files,
                "seed": seed,
                "status": status,
                "training_file": training_file,
            }
        )
        if error is not UNSET:
            field_dict["error"] = error
        if estimated_finish is not UNSET:
            field_dict["estimated_finish"] = estimated_finish
        if fine_tuned_model is not UNSET:
            field_dict["fine_tuned_model"] = fine_tuned_model
        if finished_at is not UNSET:
            field_dict["finished_at"] = finished_at
        if ranks is not UNSET:
            field_dict["ranks"] = ranks
        if result is not UNSET:
            field_dict["result"] = result
        if status_details is not UNSET:
            field_dict["status_details"] = status_details
        if stop_reason is not UNSET:
            field_dict["stop_reason"] = stop_reason
        if trained_tokens is not UNSET:
            field_dict["trained_tokens"] = trained_tokens
        if user_provided_suffix is not UNSET:
            field_dict["user_provided_suffix"] = user_provided_suffix
        if validation_file is not UNSET:
            field_dict["validation_file"] = validation_file

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.artifact import Artifact
        from ..models.job_error import JobError
        from ..models.job_object_metadata import JobObjectMetadata
        from ..models.job_object_method import JobObjectMethod
        from ..models.job_object_result_type_0 import JobObjectResultType0
        from ..models.job_requirements import JobRequirements
        from ..models.resolved_hyperparameters import ResolvedHyperparameters

        d = dict(src_dict)
        artifacts = []
        _artifacts = d.pop("artifacts")
        for artifacts_item_data in _artifacts:
            artifacts_item = Artifact.from_dict(artifacts_item_data)

            artifacts.append(artifacts_item)

        attempt = d.pop("attempt")

        created_at = d.pop("created_at")

        hyperparameters = ResolvedHyperparameters.from_dict(d.pop("hyperparameters"))

        id = d.pop("id")

        integrations = cast(list[Any], d.pop("integrations"))

        metadata = JobObjectMetadata.from_dict(d.pop("metadata"))

        method = JobObjectMethod.from_dict(d.pop("method"))

        model = d.pop("model")

        object_ = d.pop("object")

        organization_id = d.pop("organization_id")

        priority = d.pop("priority")

        requirements = JobRequirements.from_dict(d.pop("requirements"))

        result_files = cast(list[str], d.pop("result_files"))

        seed = d.pop("seed")

        status = JobStatus(d.pop("status"))

        training_file = d.pop("training_file")

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

        def _parse_estimated_finish(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        estimated_finish = _parse_estimated_finish(d.pop("estimated_finish", UNSET))

        def _parse_fine_tuned_model(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        fine_tuned_model = _parse_fine_tuned_model(d.pop("fine_tuned_model", UNSET))

        def _parse_finished_at(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        finished_at = _parse_finished_at(d.pop("finished_at", UNSET))

        def _parse_ranks(data: object) -> list[str] | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                ranks_type_0 = cast(list[str], data)

                return ranks_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(list[str] | None | Unset, data)

        ranks = _parse_ranks(d.pop("ranks", UNSET))

        def _parse_result(data: object) -> JobObjectResultType0 | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                result_type_0 = JobObjectResultType0.from_dict(data)

                return result_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobObjectResultType0 | None | Unset, data)

        result = _parse_result(d.pop("result", UNSET))

        def _parse_status_details(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        status_details = _parse_status_details(d.pop("status_details", UNSET))

        def _parse_stop_reason(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        stop_reason = _parse_stop_reason(d.pop("stop_reason", UNSET))

        def _parse_trained_tokens(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        trained_tokens = _parse_trained_tokens(d.pop("trained_tokens", UNSET))

        def _parse_user_provided_suffix(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        user_provided_suffix = _parse_user_provided_suffix(
            d.pop("user_provided_suffix", UNSET)
        )

        def _parse_validation_file(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        validation_file = _parse_validation_file(d.pop("validation_file", UNSET))

        job_object = cls(
            artifacts=artifacts,
            attempt=attempt,
            created_at=created_at,
            hyperparameters=hyperparameters,
            id=id,
            integrations=integrations,
            metadata=metadata,
            method=method,
            model=model,
            object_=object_,
            organization_id=organization_id,
            priority=priority,
            requirements=requirements,
            result_files=result_files,
            seed=seed,
            status=status,
            training_file=training_file,
            error=error,
            estimated_finish=estimated_finish,
            fine_tuned_model=fine_tuned_model,
            finished_at=finished_at,
            ranks=ranks,
            result=result,
            status_details=status_details,
            stop_reason=stop_reason,
            trained_tokens=trained_tokens,
            user_provided_suffix=user_provided_suffix,
            validation_file=validation_file,
        )

        job_object.additional_properties = d
        return job_object

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
