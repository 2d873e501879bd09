"""Building blocks of the typed config files (params.yaml, the cluster config) on pydantic.

Each field type carries an :class:`Expected` note saying in words what it accepts, so that any invalid value
becomes ONE line ``<file>: <dotted.key>: expected <what>, got <value>`` (:func:`validated`) instead of a
pydantic report.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from rsckd.errors import UserError

OWN_MESSAGE = "rsckd"  # error type of the rules that word their whole message themselves (see fail)


@dataclass(frozen=True)
class Expected:
    """What a field accepts, in the words of the error message."""

    text: str


class Block(BaseModel):
    """A mapping with exactly the declared keys."""

    model_config = ConfigDict(extra="forbid")


def fail(message: str, key: str | None = None) -> PydanticCustomError:
    """An error worded by a rule itself; ``key`` (dotted) when it is not where the rule runs."""
    return PydanticCustomError(OWN_MESSAGE, "{message}", {"message": message, "key": key})


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool: what a number in a metrics JSON must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # a number field would otherwise read true as 1
        raise ValueError("a boolean")
    return value


def integer(ge: int, le: int | None = None) -> Any:
    bound = f">= {ge}" + ("" if le is None else f" and <= {le}")
    return Annotated[int, Field(strict=True, ge=ge, le=le), Expected(f"an integer {bound}")]


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A finite number (YAML strings such as ``1e-4`` included), as a float."""
    bound = f" > {gt}" if gt is not None else f" >= {ge}" if ge is not None else ""
    bound += "" if le is None else f" and <= {le}"
    return Annotated[
        float,
        BeforeValidator(_not_bool),
        Field(gt=gt, ge=ge, le=le, allow_inf_nan=False),
        Expected(f"a number{bound}"),
    ]


def choice(*options: str) -> Any:
    return Annotated[Literal[options], Expected("one of " + ", ".join(options))]


BOOLEAN = Annotated[bool, Field(strict=True), Expected("true or false")]
TEXT = Annotated[str, Field(strict=True, min_length=1), Expected("a non-empty string")]
MAPPING = Annotated[dict[str, Any], Field(strict=True), Expected("a mapping")]


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("not a list of strings")
    return value


STRINGS = Annotated[
    list[str], BeforeValidator(_string_list), Expected("a list of non-empty strings ([a, b] or [])")
]


def hex_digits(n: int) -> Any:
    """A checksum or commit as ``n`` lower-case hex digits (how hashlib and git print them)."""
    return Annotated[
        str, Field(strict=True, pattern=f"^[0-9a-f]{{{n}}}$"), Expected(f"{n} lower-case hex digits")
    ]


def _unique(values: list[Any]) -> list[Any]:
    dupes = sorted({str(x) for x in values if values.count(x) > 1})
    if dupes:
        raise fail(f"duplicate values {', '.join(dupes)}; every value must appear once")
    return values


def unique_list(item: Any) -> Any:
    return Annotated[
        list[item],
        Field(min_length=1),
        AfterValidator(_unique),
        Expected("a non-empty list (written [a, b, ...])"),
    ]


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` (collecting its metadata) and ``X | None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            metadata = [*metadata, *extra]
        elif get_origin(annotation) in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation, metadata


def _field_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[Any, list[Any]]:
    """(type, metadata) of the field at ``loc``: a list index steps into the item type."""
    annotation: Any
    annotation, metadata = model, []
    for part in loc:
        annotation, metadata = _unwrap(annotation, metadata)
        if isinstance(part, int):
            annotation, metadata = get_args(annotation)[0], []
        else:
            field = annotation.model_fields[part]
            annotation, metadata = field.annotation, list(field.metadata)
    return _unwrap(annotation, metadata)


def _expected(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    """The :class:`Expected` text of the field at ``loc`` (a mapping's keys for a nested block)."""
    annotation, metadata = _field_at(model, loc)
    notes = [m.text for m in metadata if isinstance(m, Expected)]
    return notes[-1] if notes else "a mapping of " + ", ".join(annotation.model_fields)


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).removeprefix(".")


def message(err: ValidationError, model: type[BaseModel], name: Callable[[str], str] = str) -> str:
    """One line for the first problem of ``err`` (an unknown key first: it often explains a missing one);
    ``name`` renders the dotted key (e.g. as a command-line flag)."""
    first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc, ctx = tuple(first["loc"]), first.get("ctx") or {}
    key = name(ctx.get("key") or _dotted(loc))
    where = f"{key}: " if key else ""
    if first["type"] == OWN_MESSAGE:
        return where + ctx["message"]
    if first["type"] == "missing":
        return f"{where}missing key"
    if first["type"] == "extra_forbidden":
        return f"{where}unknown key; expected one of {', '.join(_field_at(model, loc[:-1])[0].model_fields)}"
    return f"{where}expected {_expected(model, loc)}, got {first['input']!r}"


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], raw: Any, source: str, name: Callable[[str], str] = str) -> M:
    """``raw`` as a ``model``, or one UserError ``<source>: <key>: <problem>``."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {message(err, model, name)}") from None
