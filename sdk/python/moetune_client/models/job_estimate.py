from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.estimate_inputs import EstimateInputs
    from ..models.estimate_memory import EstimateMemory
    from ..models.job_requirements import JobRequirements
    from ..models.runner_class_estimate import RunnerClassEstimate
    from ..models.training_plan import TrainingPlan


T = TypeVar("T", bound="JobEstimate")


@_attrs_define
class JobEstimate:
    """The answer to `POST /v1/fine_tuning/jobs/estimate`.

    Attributes:
        expected_trained_tokens (int): Tokens the job is expected to train on (OpenAI's `trained_tokens`): the plan's
            estimate times
            what recent jobs of this model trained per estimated token.
        fits (bool): Whether a registered runner fits the job now.
        inputs (EstimateInputs):
        method (str): The SFT method, `lora` or `full`.
        model (str):
        object_ (str): Always `fine_tuning.job.estimate`.
        plan (TrainingPlan): The training a job's spec and dataset describe, step for step as the runner plans it.
        requirements (JobRequirements): What a job needs from the runner that takes it.
        runner_classes (list[RunnerClassEstimate]): Each class of registered runners: whether it fits, and the expected
            duration on it.
        tokens_per_estimated_token (float): Trained tokens per estimated token on recent jobs of this model (1 when none
            ran): the plan
            counts characters / 4, the runner its tokenizer's tokens under the loss.
        world_size (int): Ranks the job trains on at once, one runner each (one GPU or one CPU host); the memory figures
            are one rank's.
        memory (EstimateMemory | None | Unset):
        reason (None | str | Unset): Why none does, and what to change; null when one fits.
    """

    expected_trained_tokens: int
    fits: bool
    inputs: EstimateInputs
    method: str
    model: str
    object_: str
    plan: TrainingPlan
    requirements: JobRequirements
    runner_classes: list[RunnerClassEstimate]
    tokens_per_estimated_token: float
    world_size: int
    memory: EstimateMemory | None | Unset = UNSET
    reason: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.estimate_memory import EstimateMemory

        expected_trained_tokens = self.expected_trained_tokens

        fits = self.fits

        inputs = self.inputs.to_dict()

        method = self.method

        model = self.model

        object_ = self.object_

        plan = self.plan.to_dict()

        requirements = self.requirements.to_dict()

        runner_classes = []
        for runner_classes_item_data in self.runner_classes:
            runner_classes_item = runner_classes_item_data.to_dict()
            runner_classes.append(runner_classes_item)

        tokens_per_estimated_token = self.tokens_per_estimated_token

        world_size = self.world_size

        memory: dict[str, Any] | None | Unset
        if isinstance(self.memory, Unset):
            memory = UNSET
        elif isinstance(self.memory, EstimateMemory):
            memory = self.memory.to_dict()
        else:
            memory = self.memory

        reason: None | str | Unset
        if isinstance(self.reason, Unset):
            reason = UNSET
        else:
            reason = self.reason

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "expected_trained_tokens": expected_trained_tokens,
                "fits": fits,
                "inputs": inputs,
                "method": method,
                "model": model,
                "object": object_,
                "plan": plan,
                "requirements": requirements,
                "runner_classes": runner_classes,
                "tokens_per_estimated_token": tokens_per_estimated_token,
                "world_size": world_size,
            }
        )
        if memory is not UNSET:
            field_dict["memory"] = memory
        if reason is not UNSET:
            field_dict["reason"] = reason

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.estimate_inputs import EstimateInputs
        from ..models.estimate_memory import EstimateMemory
        from ..models.job_requirements import JobRequirements
        from ..models.runner_class_estimate import RunnerClassEstimate
        from ..models.training_plan import TrainingPlan

        d = dict(src_dict)
        expected_trained_tokens = d.pop("expected_trained_tokens")

        fits = d.pop("fits")

        inputs = EstimateInputs.from_dict(d.pop("inputs"))

        method = d.pop("method")

        model = d.pop("model")

        object_ = d.pop("object")

        plan = TrainingPlan.from_dict(d.pop("plan"))

        requirements = JobRequirements.from_dict(d.pop("requirements"))

        runner_classes = []
        _runner_classes = d.pop("runner_classes")
        for runner_classes_item_data in _runner_classes:
            runner_classes_item = RunnerClassEstimate.from_dict(
                runner_classes_item_data
            )

            runner_classes.append(runner_classes_item)

        tokens_per_estimated_token = d.pop("tokens_per_estimated_token")

        world_size = d.pop("world_size")

        def _parse_memory(data: object) -> EstimateMemory | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                memory_type_1 = EstimateMemory.from_dict(data)

                return memory_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(EstimateMemory | None | Unset, data)

        memory = _parse_memory(d.pop("memory", UNSET))

        def _parse_reason(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        reason = _parse_reason(d.pop("reason", UNSET))

        job_estimate = cls(
            expected_trained_tokens=expected_trained_tokens,
            fits=fits,
            inputs=inputs,
            method=method,
            model=model,
            object_=object_,
            plan=plan,
            requirements=requirements,
            runner_classes=runner_classes,
            tokens_per_estimated_token=tokens_per_estimated_token,
            world_size=world_size,
            memory=memory,
            reason=reason,
        )

        job_estimate.additional_properties = d
        return job_estimate

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
