"""Python values to flyteidl2 literals and back, in the encodings Flyte's own type engine uses,
so that our gRPC client and server talk to Flyte's (dicts are msgpack binaries, files are
blobs, lists of one type are collections).

Only self-describing literals are read (primitives, none, collections, maps, msgpack, structs,
blobs); Flyte's pickled values and offloaded literals are refused with a message saying so.
"""

from __future__ import annotations

import datetime as dt
import typing
from typing import Any

from flyteidl2.core import interface_pb2, literals_pb2, types_pb2
from flyteidl2.task import common_pb2
from google.protobuf import json_format, struct_pb2

from ..io import File

_SIMPLE = {int: types_pb2.INTEGER, float: types_pb2.FLOAT, str: types_pb2.STRING, bool: types_pb2.BOOLEAN,
           dt.datetime: types_pb2.DATETIME, dt.timedelta: types_pb2.DURATION, type(None): types_pb2.NONE}


def _msgpack_struct_type() -> types_pb2.LiteralType:
    ann = struct_pb2.Struct()
    ann.update({"cache-key-metadata": {"serialization-format": "msgpack"}})
    return types_pb2.LiteralType(simple=types_pb2.STRUCT, annotation=types_pb2.TypeAnnotation(annotations=ann))


def literal_type(tp: Any) -> types_pb2.LiteralType:
    """The LiteralType Flyte derives for a Python annotation (``Any`` and unknowns: a msgpack struct)."""
    if tp in _SIMPLE:
        return types_pb2.LiteralType(simple=_SIMPLE[tp])
    if _is_file(tp):
        return types_pb2.LiteralType(blob=types_pb2.BlobType(dimensionality=types_pb2.BlobType.SINGLE))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, typing.List) and args:
        return types_pb2.LiteralType(collection_type=literal_type(args[0]))
    if origin in (dict, typing.Dict) and len(args) == 2 and args[0] is str and args[1] is not Any:
        return types_pb2.LiteralType(map_value_type=literal_type(args[1]))
    return _msgpack_struct_type()


def _is_file(tp: Any) -> bool:
    return isinstance(tp, type) and (issubclass(tp, File) or (tp.__name__ == "File" and hasattr(tp, "path")))


def typed_interface(inputs: dict[str, Any], outputs: dict[str, Any]) -> interface_pb2.TypedInterface:
    def vmap(types):
        return interface_pb2.VariableMap(variables=[
            interface_pb2.VariableEntry(key=k, value=interface_pb2.Variable(type=literal_type(t)))
            for k, t in types.items()])
    return interface_pb2.TypedInterface(inputs=vmap(inputs), outputs=vmap(outputs))


def to_literal(value: Any) -> literals_pb2.Literal:
    L, S, P = literals_pb2.Literal, literals_pb2.Scalar, literals_pb2.Primitive
    if value is None:
        return L(scalar=S(none_type=literals_pb2.Void()))
    if isinstance(value, bool):
        return L(scalar=S(primitive=P(boolean=value)))
    if isinstance(value, int):
        return L(scalar=S(primitive=P(integer=value)))
    if isinstance(value, float):
        return L(scalar=S(primitive=P(float_value=value)))
    if isinstance(value, str):
        return L(scalar=S(primitive=P(string_value=value)))
    if isinstance(value, dt.datetime):
        p = P()
        p.datetime.FromDatetime(value)
        return L(scalar=S(primitive=p))
    if isinstance(value, dt.timedelta):
        p = P()
        p.duration.FromTimedelta(value)
        return L(scalar=S(primitive=p))
    if isinstance(value, File):
        return L(scalar=S(blob=literals_pb2.Blob(
            uri=value.path, metadata=literals_pb2.BlobMetadata(type=types_pb2.BlobType()))))
    if isinstance(value, (list, tuple)):
        return L(collection=literals_pb2.LiteralCollection(literals=[to_literal(v) for v in value]))
    import msgpack  # dicts and anything else JSON-like travel as msgpack, as Flyte sends them

    return L(scalar=S(binary=literals_pb2.Binary(value=msgpack.dumps(value, default=str), tag="msgpack")))


def to_native(lit: literals_pb2.Literal) -> Any:
    kind = lit.WhichOneof("value")
    if kind == "collection":
        return [to_native(x) for x in lit.collection.literals]
    if kind == "map":
        return {k: to_native(v) for k, v in lit.map.literals.items()}
    if kind == "offloaded_metadata":
        raise ValueError(f"offloaded literal at {lit.offloaded_metadata.uri}: not readable by the local engine")
    scalar = lit.scalar
    skind = scalar.WhichOneof("value")
    if skind == "primitive":
        p = scalar.primitive
        pkind = p.WhichOneof("value")
        if pkind == "datetime":
            return p.datetime.ToDatetime(tzinfo=dt.timezone.utc)
        if pkind == "duration":
            return p.duration.ToTimedelta()
        return getattr(p, pkind) if pkind else None
    if skind == "none_type" or skind is None:
        return None
    if skind == "blob":
        return File(path=scalar.blob.uri)
    if skind == "binary":
        if scalar.binary.tag != "msgpack":
            raise ValueError(f"a {scalar.binary.tag or 'untagged'} binary literal (Flyte pickles types it does not "
                             f"know): return JSON-like values from the connector")
        import msgpack

        return msgpack.loads(scalar.binary.value, strict_map_key=False)
    if skind == "generic":
        return json_format.MessageToDict(scalar.generic)
    if skind == "union":
        return to_native(scalar.union.value)
    if skind == "structured_dataset":
        return scalar.structured_dataset.uri
    if skind == "error":
        raise RuntimeError(scalar.error.message)
    raise ValueError(f"unsupported literal kind {skind}")


def to_inputs(values: dict[str, Any]) -> common_pb2.Inputs:
    return common_pb2.Inputs(literals=[common_pb2.NamedLiteral(name=k, value=to_literal(v)) for k, v in values.items()])


def from_inputs(inputs: common_pb2.Inputs) -> dict[str, Any]:
    return {nl.name: to_native(nl.value) for nl in inputs.literals}


def to_outputs(values: dict[str, Any]) -> common_pb2.Outputs:
    return common_pb2.Outputs(literals=[common_pb2.NamedLiteral(name=k, value=to_literal(v)) for k, v in values.items()])


def from_outputs(outputs: common_pb2.Outputs) -> dict[str, Any]:
    return {nl.name: to_native(nl.value) for nl in outputs.literals}
