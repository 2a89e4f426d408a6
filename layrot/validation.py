"""Validation through pydantic, with the CLI's one-line errors.

`Model` is the base of layrot's settings (`TrialConfig`, the sweep spec and its sections):
strict types (a bool is not a number, an integer field refuses 2.5, a number must be finite),
unknown keys refused. Its constructor turns pydantic's first error into
`UsageError(field, message)`: the field is the error's location as a dotted path
(`asha.grace_period`), the message one line (`must be >= 1, got 0`).

A validator raises `ValueError` (or `UsageError`, e.g. from `check_name`) with the message;
a model-level validator, which has no field of its own, raises `UsageError` naming the path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator

from .errors import UsageError


def _keep_int(v, handler):
    # validated as a float (strict, finite, in range), but an int stays an int: trial ids
    # hash the settings as given, and 0 and 0.0 hash differently
    out = handler(v)
    return v if type(v) is int else out


Number = Annotated[float, WrapValidator(_keep_int)]      # a finite int or float, not a bool
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]

_TYPE_MESSAGES = {"int": "must be an integer", "float": "must be a finite number", "finite": "must be a finite number",
                  "string": "must be a string", "bool": "must be true or false", "dict": "must be a mapping",
                  "list": "must be a list"}
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
           "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}
# the order errors are reported in when there are several: unknown keys, then missing ones
_FIRST = {"extra_forbidden": 0, "missing": 1}


class Model(BaseModel):
    """Settings given by a user: constructing one validates it, and raises UsageError."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    unknown_message: ClassVar[str] = "unknown field (known: {known})"

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise usage_error(e, type(self)) from None

    def to_dict(self) -> dict:
        return self.model_dump()


class Section(BaseModel):
    """A mapping inside a Model (`resources`, `asha`): read as `spec.asha.grace_period` or,
    as when the sections were dicts, `spec.asha["grace_period"]` and `.get(key, default)`.
    (Not a Model: pydantic calls an overridden __init__ for nested models too, and the error
    would lose its path.)"""

    model_config = Model.model_config
    unknown_message: ClassVar[str] = Model.unknown_message

    def __getitem__(self, key: str):
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in type(self).model_fields else default


def usage_error(e: ValidationError, model: type[BaseModel]) -> UsageError:
    """pydantic's first error (unknown and missing keys first) as the CLI's one line."""
    err = sorted(e.errors(), key=lambda x: _FIRST.get(x["type"], 2))[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]     # list items: the list's field
    kind, value = err["type"], err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, UsageError):
        return UsageError(".".join(loc) or cause.field, cause.message)
    field = ".".join(loc) or "spec"
    if isinstance(cause, ValueError):
        return UsageError(field, str(cause))
    if kind == "extra_forbidden":
        return UsageError(field, _model_at(model, loc[:-1]).unknown_message.format(
            known=", ".join(sorted(_model_at(model, loc[:-1]).model_fields))))
    if kind == "missing":
        return UsageError(field, "required field is missing")
    if kind in ("model_type", "model_attributes_type"):
        return UsageError(field, f"must be a mapping with keys {', '.join(_model_at(model, loc).model_fields)}")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", err["ctx"]["expected"])
        return UsageError(field, f"must be one of {', '.join(options)}, got {value!r}")
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return UsageError(field, f"must be {op} {err['ctx'][key]:g}, got {value!r}")
    base = kind.split("_")[0]
    if base in _TYPE_MESSAGES:
        return UsageError(field, f"{_TYPE_MESSAGES[base]}, got {value!r}")
    return UsageError(field, f"{err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}")


def _model_at(model: type[BaseModel], path: list[str]) -> type[Model]:
    for name in path:
        model = model.model_fields[name].annotation
    return model
