from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.model_object_inspect_type_0 import ModelObjectInspectType0


T = TypeVar("T", bound="ModelObject")


@_attrs_define
class ModelObject:
    """OpenAI's model object, plus where the weights are and what `inspect` found.

    Attributes:
        architecture (str): `architectures[0]` of the model's config.json, e.g. `MixtralForCausalLM`.
        created (int): Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
        id (str):
        object_ (str): Always `model`.
        owned_by (str):
        source (str): `builtin` or `s3`.
        inspect (ModelObjectInspectType0 | None | Unset): `moetune-runner inspect` output: layers, experts, parameter
            counts, memory estimates.
        uri (None | str | Unset): `s3://bucket/prefix/` for registered models.
    """

    architecture: str
    created: int
    id: str
    object_: str
    owned_by: str
    source: str
    inspect: ModelObjectInspectType0 | None | Unset = UNSET
    uri: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.model_object_inspect_type_0 import ModelObjectInspectType0

        architecture = self.architecture

        created = self.created

        id = self.id

        object_ = self.object_

        owned_by = self.owned_by

        source = self.source

        inspect: dict[str, Any] | None | Unset
        if isinstance(self.inspect, Unset):
            inspect = UNSET
        elif isinstance(self.inspect, ModelObjectInspectType0):
            inspect = self.inspect.to_dict()
        else:
            inspect = self.inspect

        uri: None | str | Unset
        if isinstance(self.uri, Unset):
            uri = UNSET
        else:
            uri = self.uri

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "architecture": architecture,
                "created": created,
                "id": id,
                "object": object_,
                "owned_by": owned_by,
                "source": source,
            }
        )
        if inspect is not UNSET:
            field_dict["inspect"] = inspect
        if uri is not UNSET:
            field_dict["uri"] = uri

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.model_object_inspect_type_0 import ModelObjectInspectType0

        d = dict(src_dict)
        architecture = d.pop("architecture")

        created = d.pop("created")

        id = d.pop("id")

        object_ = d.pop("object")

        owned_by = d.pop("owned_by")

        source = d.pop("source")

        def _parse_inspect(data: object) -> ModelObjectInspectType0 | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                inspect_type_0 = ModelObjectInspectType0.from_dict(data)

                return inspect_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(ModelObjectInspectType0 | None | Unset, data)

        inspect = _parse_inspect(d.pop("inspect", UNSET))

        def _parse_uri(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        uri = _parse_uri(d.pop("uri", UNSET))

        model_object = cls(
            architecture=architecture,
            created=created,
            id=id,
            object_=object_,
            owned_by=owned_by,
            source=source,
            inspect=inspect,
            uri=uri,
        )

        model_object.additional_properties = d
        return model_object

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
