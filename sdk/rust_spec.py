"""The Rust SDK's input, from the output of @apiture/openapi-down-convert (argv[1] -> argv[2]):

* utoipa writes an optional object as `oneOf: [{type: "null"}, {$ref: ...}]`, which the converter
  keeps, but OpenAPI 3.0 has no `null` type: each becomes `allOf: [{$ref: ...}], nullable: true`.
* An optional parameter is absent rather than null: its schema loses `nullable` (progenitor would make
  it an `Option<Option<_>>`).
* progenitor cannot generate multipart/form-data operations (`POST /v1/files`, `POST
  /v1/uploads/{id}/parts`): they are left out here and written by hand in sdk/rust/src/upload.rs."""

import json
import sys


def fix(node):
    if isinstance(node, list):
        return [fix(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: fix(value) for key, value in node.items()}
    for combinator in ("oneOf", "anyOf"):
        options = node.get(combinator)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            del node[combinator]
            node["nullable"] = True
            if len(rest) == 1 and set(rest[0]) == {"$ref"}:
                node["allOf"] = rest
            else:
                node[combinator] = rest
    return node


def drop_multipart(spec):
    for item in spec["paths"].values():
        for method in [m for m, op in item.items() if "multipart/form-data" in op.get("requestBody", {}).get("content", {})]:
            del item[method]
    spec["paths"] = {path: item for path, item in spec["paths"].items() if item}
    return spec


def optional_parameters_not_nullable(spec):
    for item in spec["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if not parameter.get("required"):
                    parameter.get("schema", {}).pop("nullable", None)
    return spec


spec = optional_parameters_not_nullable(drop_multipart(json.load(open(sys.argv[1]))))
with open(sys.argv[2], "w") as out:
    json.dump(fix(spec), out, indent=2, ensure_ascii=False)
    out.write("\n")
