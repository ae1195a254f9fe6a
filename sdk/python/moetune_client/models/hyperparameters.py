from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.hyperparameters_batch_size import HyperparametersBatchSize
    from ..models.hyperparameters_learning_rate_multiplier import (
        HyperparametersLearningRateMultiplier,
    )
    from ..models.hyperparameters_n_epochs import HyperparametersNEpochs


T = TypeVar("T", bound="Hyperparameters")


@_attrs_define
class Hyperparameters:
    """OpenAI hyperparameters; each accepts `"auto"` or a number.

    Attributes:
        batch_size (HyperparametersBatchSize): `"auto"` (4) or a positive integer.
        learning_rate_multiplier (HyperparametersLearningRateMultiplier): `"auto"` (1.0) or a positive number
            multiplying the method's learning rate.
        n_epochs (HyperparametersNEpochs): `"auto"` (1) or a positive integer.
    """

    batch_size: HyperparametersBatchSize
    learning_rate_multiplier: HyperparametersLearningRateMultiplier
    n_epochs: HyperparametersNEpochs

    def to_dict(self) -> dict[str, Any]:
        batch_size = self.batch_size.to_dict()

        learning_rate_multiplier = self.learning_rate_multiplier.to_dict()

        n_epochs = self.n_epochs.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "batch_size": batch_size,
                "learning_rate_multiplier": learning_rate_multiplier,
                "n_epochs": n_epochs,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.hyperparameters_batch_size import HyperparametersBatchSize
        from ..models.hyperparameters_learning_rate_multiplier import (
            HyperparametersLearningRateMultiplier,
        )
        from ..models.hyperparameters_n_epochs import HyperparametersNEpochs

        d = dict(src_dict)
        batch_size = HyperparametersBatchSize.from_dict(d.pop("batch_size"))

        learning_rate_multiplier = HyperparametersLearningRateMultiplier.from_dict(
            d.pop("learning_rate_multiplier")
        )

        n_epochs = HyperparametersNEpochs.from_dict(d.pop("n_epochs"))

        hyperparameters = cls(
            batch_size=batch_size,
            learning_rate_multiplier=learning_rate_multiplier,
            n_epochs=n_epochs,
        )

        return hyperparameters
