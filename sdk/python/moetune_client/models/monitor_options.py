from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="MonitorOptions")


@_attrs_define
class MonitorOptions:
    """The expert-usage monitor (docs/design.md); thresholds are job options.

    Attributes:
        cooldown_steps (int | Unset): Steps between two learning-rate drops. Default 200. Default: 200.
        diagnostic_prompts (list[str] | Unset): Diagnostic prompts; default: prompts drawn from the validation data.
        early_stop_after (int | Unset): Stop training after this many consecutive alerts. Default 3. Default: 3.
        enabled (bool | Unset):  Default: True.
        entropy_norm_threshold (float | Unset): ... and the mean `entropy_norm` is at most this. Default 0.40. Default:
            0.4.
        every_n_steps (int | Unset): Run the diagnostic prompts every this many optimiser steps. Default 50. Default:
            50.
        lr_decay (float | Unset): On alert the learning rate is multiplied by this. Default 0.5. Default: 0.5.
        max_routing_drift (float | None | Unset): The routing-drift guardrail, in (0, 1]. At every check the held-out
            validation tokens are
            routed by the model in training and by the base model; the drift is the fraction (mean over
            MoE layers) whose top-k experts changed. Above this, the job stores a checkpoint and pauses
            (`monitor.alert` webhook). Resuming accepts the drift reached: the guardrail then pauses again
            only if the drift grows by this much more. Default: no guardrail (drift is still reported).
        min_lr (float | Unset): The learning rate is never lowered below this. Default 1e-7. Default: 1e-07.
        top1_share_threshold (float | Unset): Alert when the mean `top1_share` over layers is at least this ... Default
            0.70. Default: 0.7.
        top_k (int | Unset): Router choices counted per token. Default 1 (each token's first choice). The seed counts
            all
            top-k slots (2 for Mixtral); then no expert can exceed a 1/k share, so with k = 2 the 0.70
            threshold could never fire. Set 2 to count exactly as the seed does. Default: 1.
    """

    cooldown_steps: int | Unset = 200
    diagnostic_prompts: list[str] | Unset = UNSET
    early_stop_after: int | Unset = 3
    enabled: bool | Unset = True
    entropy_norm_threshold: float | Unset = 0.4
    every_n_steps: int | Unset = 50
    lr_decay: float | Unset = 0.5
    max_routing_drift: float | None | Unset = UNSET
    min_lr: float | Unset = 1e-07
    top1_share_threshold: float | Unset = 0.7
    top_k: int | Unset = 1

    def to_dict(self) -> dict[str, Any]:
        cooldown_steps = self.cooldown_steps

        diagnostic_prompts: list[str] | Unset = UNSET
        if not isinstance(self.diagnostic_prompts, Unset):
            diagnostic_prompts = self.diagnostic_prompts

        early_stop_after = self.early_stop_after

        enabled = self.enabled

        entropy_norm_threshold = self.entropy_norm_threshold

        every_n_steps = self.every_n_steps

        lr_decay = self.lr_decay

        max_routing_drift: float | None | Unset
        if isinstance(self.max_routing_drift, Unset):
            max_routing_drift = UNSET
        else:
            max_routing_drift = self.max_routing_drift

        min_lr = self.min_lr

        top1_share_threshold = self.top1_share_threshold

        top_k = self.top_k

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if cooldown_steps is not UNSET:
            field_dict["cooldown_steps"] = cooldown_steps
        if diagnostic_prompts is not UNSET:
            field_dict["diagnostic_prompts"] = diagnostic_prompts
        if early_stop_after is not UNSET:
            field_dict["early_stop_after"] = early_stop_after
        if enabled is not UNSET:
            field_dict["enabled"] = enabled
        if entropy_norm_threshold is not UNSET:
            field_dict["entropy_norm_threshold"] = entropy_norm_threshold
        if every_n_steps is not UNSET:
            field_dict["every_n_steps"] = every_n_steps
        if lr_decay is not UNSET:
            field_dict["lr_decay"] = lr_decay
        if max_routing_drift is not UNSET:
            field_dict["max_routing_drift"] = max_routing_drift
        if min_lr is not UNSET:
            field_dict["min_lr"] = min_lr
        if top1_share_threshold is not UNSET:
            field_dict["top1_share_threshold"] = top1_share_threshold
        if top_k is not UNSET:
            field_dict["top_k"] = top_k

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        cooldown_steps = d.pop("cooldown_steps", UNSET)

        diagnostic_prompts = cast(list[str], d.pop("diagnostic_prompts", UNSET))

        early_stop_after = d.pop("early_stop_after", UNSET)

        enabled = d.pop("enabled", UNSET)

        entropy_norm_threshold = d.pop("entropy_norm_threshold", UNSET)

        every_n_steps = d.pop("every_n_steps", UNSET)

        lr_decay = d.pop("lr_decay", UNSET)

        def _parse_max_routing_drift(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        max_routing_drift = _parse_max_routing_drift(d.pop("max_routing_drift", UNSET))

        min_lr = d.pop("min_lr", UNSET)

        top1_share_threshold = d.pop("top1_share_threshold", UNSET)

        top_k = d.pop("top_k", UNSET)

        monitor_options = cls(
            cooldown_steps=cooldown_steps,
            diagnostic_prompts=diagnostic_prompts,
            early_stop_after=early_stop_after,
            enabled=enabled,
            entropy_norm_threshold=entropy_norm_threshold,
            every_n_steps=every_n_steps,
            lr_decay=lr_decay,
            max_routing_drift=max_routing_drift,
            min_lr=min_lr,
            top1_share_threshold=top1_share_threshold,
            top_k=top_k,
        )

        return monitor_options
