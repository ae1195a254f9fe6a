from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.layer_expert_usage import LayerExpertUsage


T = TypeVar("T", bound="ExpertUsage")


@_attrs_define
class ExpertUsage:
    """One expert-usage monitor check (`fine_tuning.job.expert_usage`).

    Attributes:
        alert (bool): The router-collapse alert fired.
        attempt (int): The attempt that measured it.
        created_at (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        drift_exceeded (bool): The routing drift crossed `monitor.max_routing_drift`: the job paused.
        id (str): The id of the job event that recorded the check (`ftevent-N`): the cursor for `after`.
        layers (list[LayerExpertUsage]): Per MoE layer: every expert's count and share of the routed (token, choice)
            pairs on the
            diagnostic prompts, their concentration, and how much of the validation data the layer still
            routes as the base model does.
        learning_rate (float):
        mean_entropy_norm (float):
        mean_top1_share (float):
        object_ (str): Always `fine_tuning.job.expert_usage`.
        stage (str): `sft` or `qat`.
        step (int):
        action (None | str | Unset): What the monitor did: `lr_decayed to …`, `early_stop`, `paused`, or null.
        routing_drift (float | None | Unset): Fraction of validation tokens (mean over layers) whose top-k experts
            differ from the base's.
    """

    alert: bool
    attempt: int
    created_at: int
    drift_exceeded: bool
    id: str
    layers: list[LayerExpertUsage]
    learning_rate: float
    mean_entropy_norm: float
    mean_top1_share: float
    object_: str
    stage: str
    step: int
    action: None | str | Unset = UNSET
    routing_drift: float | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        alert = self.alert

        attempt = self.attempt

        created_at = self.created_at

        drift_exceeded = self.drift_exceeded

        id = self.id

        layers = []
        for layers_item_data in self.layers:
            layers_item = layers_item_data.to_dict()
            layers.append(layers_item)

        learning_rate = self.learning_rate

        mean_entropy_norm = self.mean_entropy_norm

        mean_top1_share = self.mean_top1_share

        object_ = self.object_

        stage = self.stage

        step = self.step

        action: None | str | Unset
        if isinstance(self.action, Unset):
            action = UNSET
        else:
            action = self.action

        routing_drift: float | None | Unset
        if isinstance(self.routing_drift, Unset):
            routing_drift = UNSET
        else:
            routing_drift = self.routing_drift

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "alert": alert,
                "attempt": attempt,
                "created_at": created_at,
                "drift_exceeded": drift_exceeded,
                "id": id,
                "layers": layers,
                "learning_rate": learning_rate,
                "mean_entropy_norm": mean_entropy_norm,
                "mean_top1_share": mean_top1_share,
                "object": object_,
                "stage": stage,
                "step": step,
            }
        )
        if action is not UNSET:
            field_dict["action"] = action
        if routing_drift is not UNSET:
            field_dict["routing_drift"] = routing_drift

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.layer_expert_usage import LayerExpertUsage

        d = dict(src_dict)
        alert = d.pop("alert")

        attempt = d.pop("attempt")

        created_at = d.pop("created_at")

        drift_exceeded = d.pop("drift_exceeded")

        id = d.pop("id")

        layers = []
        _layers = d.pop("layers")
        for layers_item_data in _layers:
            layers_item = LayerExpertUsage.from_dict(layers_item_data)

            layers.append(layers_item)

        learning_rate = d.pop("learning_rate")

        mean_entropy_norm = d.pop("mean_entropy_norm")

        mean_top1_share = d.pop("mean_top1_share")

        object_ = d.pop("object")

        stage = d.pop("stage")

        step = d.pop("step")

        def _parse_action(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        action = _parse_action(d.pop("action", UNSET))

        def _parse_routing_drift(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        routing_drift = _parse_routing_drift(d.pop("routing_drift", UNSET))

        expert_usage = cls(
            alert=alert,
            attempt=attempt,
            created_at=created_at,
            drift_exceeded=drift_exceeded,
            id=id,
            layers=layers,
            learning_rate=learning_rate,
            mean_entropy_norm=mean_entropy_norm,
            mean_top1_share=mean_top1_share,
            object_=object_,
            stage=stage,
            step=step,
            action=action,
            routing_drift=routing_drift,
        )

        expert_usage.additional_properties = d
        return expert_usage

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
