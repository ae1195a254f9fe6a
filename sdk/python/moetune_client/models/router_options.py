from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.router_mode import RouterMode
from ..types import UNSET, Unset

T = TypeVar("T", bound="RouterOptions")


@_attrs_define
class RouterOptions:
    """Router protection (docs/design.md).

    Attributes:
        aux_loss_coef (float | Unset): λ of the load-balancing loss `λ·N·Σ f_i·P_i`, added when the router is trained.
            Default 0.001. Default: 0.001.
        capacity_factor (float | None | Unset): Training-only capacity factor: tokens beyond `factor · tokens·k /
            experts` per expert are dropped.
        jitter (float | Unset): Multiplicative uniform jitter `U(1−ε, 1+ε)` on router inputs during training. Default 0.
            Default: 0.0.
        mode (RouterMode | Unset): Whether the router is trained during SFT.
        z_loss_coef (float | Unset): Coefficient of the router z-loss `mean(logsumexp(logits)²)`. Default 0 (off).
            Default: 0.0.
    """

    aux_loss_coef: float | Unset = 0.001
    capacity_factor: float | None | Unset = UNSET
    jitter: float | Unset = 0.0
    mode: RouterMode | Unset = UNSET
    z_loss_coef: float | Unset = 0.0

    def to_dict(self) -> dict[str, Any]:
        aux_loss_coef = self.aux_loss_coef

        capacity_factor: float | None | Unset
        if isinstance(self.capacity_factor, Unset):
            capacity_factor = UNSET
        else:
            capacity_factor = self.capacity_factor

        jitter = self.jitter

        mode: str | Unset = UNSET
        if not isinstance(self.mode, Unset):
            mode = self.mode.value

        z_loss_coef = self.z_loss_coef

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if aux_loss_coef is not UNSET:
            field_dict["aux_loss_coef"] = aux_loss_coef
        if capacity_factor is not UNSET:
            field_dict["capacity_factor"] = capacity_factor
        if jitter is not UNSET:
            field_dict["jitter"] = jitter
        if mode is not UNSET:
            field_dict["mode"] = mode
        if z_loss_coef is not UNSET:
            field_dict["z_loss_coef"] = z_loss_coef

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        aux_loss_coef = d.pop("aux_loss_coef", UNSET)

        def _parse_capacity_factor(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        capacity_factor = _parse_capacity_factor(d.pop("capacity_factor", UNSET))

        jitter = d.pop("jitter", UNSET)

        _mode = d.pop("mode", UNSET)
        mode: RouterMode | Unset
        if isinstance(_mode, Unset):
            mode = UNSET
        else:
            mode = RouterMode(_mode)

        z_loss_coef = d.pop("z_loss_coef", UNSET)

        router_options = cls(
            aux_loss_coef=aux_loss_coef,
            capacity_factor=capacity_factor,
            jitter=jitter,
            mode=mode,
            z_loss_coef=z_loss_coef,
        )

        return router_options
