"""Name -> pass class, filled by the packages that declare ``onnxsmith.passes`` entry points.

core/ never imports passes/: the built-in families register through the same entry point
a third-party package would use (see pyproject.toml).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pydantic

from onnxsmith.errors import RecipeError
from onnxsmith.pass_base import Pass

__all__ = ["ParamInfo", "PassInfo", "available_passes", "create_pass", "get_pass_class", "pass_infos", "register_pass"]

logger = logging.getLogger(__name__)

_PASSES: dict[str, type[Pass]] = {}
_loaded = False


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    existing = _PASSES.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"two passes are named '{cls.name}': {existing.__module__} and {cls.__module__}")
    _PASSES[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group="onnxsmith.passes"):
        ep.load()  # importing the module registers its passes


def available_passes() -> dict[str, type[Pass]]:
    _load_entry_points()
    return dict(sorted(_PASSES.items()))


def get_pass_class(name: str) -> type[Pass]:
    passes = available_passes()
    if name not in passes:
        raise RecipeError(f"unknown pass '{name}'", f"choose one of: {', '.join(passes)}")
    return passes[name]


def create_pass(name: str, params: dict[str, Any] | None = None) -> Pass:
    """Build a pass from its name and option values (strings from a pipeline are coerced)."""
    cls = get_pass_class(name)
    params = dict(params or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown and cls.extra_options:
        extra = dict(params.pop(cls.extra_options, None) or {})
        extra.update({key: params.pop(key) for key in unknown})
        params[cls.extra_options] = extra
        unknown = []
    if unknown:
        choices = ", ".join(valid) if valid else "(it takes no options)"
        raise RecipeError(f"pass '{name}' has no option '{unknown[0]}'", f"its options are: {choices}")
    try:
        return pydantic.TypeAdapter(cls).validate_python(params)
    except pydantic.ValidationError as e:
        problems = "; ".join(_option_problem(err) for err in e.errors())
        raise RecipeError(f"pass '{name}': {problems}", "see `onnxsmith passes` for its options") from None
    except ValueError as e:
        raise RecipeError(f"pass '{name}': {e}", "see `onnxsmith passes` for its options") from None


def _option_problem(err: dict[str, Any]) -> str:
    """One validation error of a pass's options, in the user's terms: the option and what is wrong
    with the value given; a check of the options together (the pass's own ValueError) as its message alone."""
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:
        return message
    option = ".".join(str(p) for p in err["loc"])
    return f"option '{option}': {message} (got {err.get('input')!r})"


@dataclass
class ParamInfo:
    name: str
    type: str
    default: Any
    doc: str


@dataclass
class PassInfo:
    name: str
    summary: str
    exact: bool
    needs_calibration: bool
    params: list[ParamInfo]
    rules: dict[str, str]


def pass_infos() -> list[PassInfo]:
    """What ``onnxsmith passes`` shows: every pass with its options and defaults."""
    infos = []
    for name, cls in available_passes().items():
        hints = typing.get_type_hints(cls)
        params = [
            ParamInfo(
                name=f.name,
                type=_type_name(hints.get(f.name, f.type)),
                default=f.default if f.default is not dataclasses.MISSING else None,
                doc=f.metadata.get("doc", ""),
            )
            for f in dataclasses.fields(cls)
        ]
        infos.append(PassInfo(name, cls.summary, cls.exact, cls.needs_calibration, params, cls.catalogue()))
    return infos


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (tuple, list):
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))
