"""The valid ranges of seqtag's numeric options, written once.

Each range is a type for constructor signatures: jsonargparse checks it when it parses a command
line or config (and ``--help`` names it), and :func:`check_ranges` checks the same annotations
when a class is built in Python, so a bad value is a one-line error either way.

Unlike ``jsonargparse.typing.PositiveInt`` and its kin, whose values are instances of the
restricted class, these types give plain ``int``/``float`` values: a parsed value ends up in the
model's and the DataModule's hyper-parameters, and from there in checkpoints (which are read
with ``weights_only=True``, refusing unknown classes) and in ``hparams.yaml``.
"""

from __future__ import annotations

import math
import operator
import types
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from jsonargparse.typing import register_type

from seqtag.errors import ConfigError

__all__ = [
    "DecayFactor",
    "DropoutRate",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "check_ranges",
]


def _range_type(
    name: str,
    base: type[int] | type[float],
    low: tuple[Callable[[Any, Any], bool], float],
    high: tuple[Callable[[Any, Any], bool], float] | None,
    description: str,
) -> type:
    """A registered jsonargparse type: ``name(value)`` is a plain ``base`` value in range.

    ``name(value)`` raises ``ValueError("must be DESCRIPTION, got VALUE")`` for a value out of
    range, a bool, a non-finite number, or (for ``int``) a number with a fractional part.
    """

    def new(cls: type, value: Any) -> int | float:
        number: int | float | None = None
        if not isinstance(value, bool):
            try:
                number = float(value) if base is float else _as_int(value)
            except (TypeError, ValueError, OverflowError):
                number = None
        checks = [low] if high is None else [low, high]
        finite = isinstance(number, int) or (number is not None and math.isfinite(number))
        if not finite or not all(c(number, r) for c, r in checks):
            shown = value if isinstance(value, str) and value else repr(value)
            raise ValueError(f"must be {description}, got {shown}")
        return number

    doc = f"{base.__name__} restricted to {description}"
    created = type(name, (base,), {"__new__": new, "__doc__": doc, "description": description})
    created.__module__ = __name__
    register_type(created, serializer=base, fail_already_registered=True)
    return created


def _as_int(value: Any) -> int:
    """``value`` as an int: ints, integral floats (``3.0``) and integer strings."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(value)


_ge, _gt, _le, _lt = operator.ge, operator.gt, operator.le, operator.lt

PositiveInt = _range_type("PositiveInt", int, (_ge, 1), None, "an integer >= 1")
NonNegativeInt = _range_type("NonNegativeInt", int, (_ge, 0), None, "an integer >= 0")
PositiveFloat = _range_type("PositiveFloat", float, (_gt, 0), None, "a number > 0")
NonNegativeFloat = _range_type("NonNegativeFloat", float, (_ge, 0), None, "a number >= 0")
Probability = _range_type("Probability", float, (_ge, 0), (_le, 1), "a number in [0, 1]")
DropoutRate = _range_type("DropoutRate", float, (_ge, 0), (_lt, 1), "a number in [0, 1)")
DecayFactor = _range_type("DecayFactor", float, (_gt, 0), (_le, 1), "a number in (0, 1]")

_RANGE_TYPES = frozenset(
    [
        PositiveInt,
        NonNegativeInt,
        PositiveFloat,
        NonNegativeFloat,
        Probability,
        DropoutRate,
        DecayFactor,
    ]
)


@cache
def _ranged_parameters(function: Callable[..., Any]) -> tuple[tuple[str, type, bool], ...]:
    """``(name, range type, None allowed)`` of the parameters annotated ``T`` or ``T | None``."""
    ranged = []
    for name, hint in get_type_hints(function).items():
        options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        kinds = [t for t in options if t is not type(None)]
        if len(kinds) == 1 and kinds[0] in _RANGE_TYPES:
            ranged.append((name, kinds[0], len(kinds) < len(options)))
    return tuple(ranged)


def check_ranges(section: str, function: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first argument outside its annotated range.

    Args:
        section: how the CLI names the class's options (``data``, ``model``), for the message.
        function: the ``__init__`` whose annotations give the ranges.
        arguments: its arguments by name (``locals()`` at the top of ``__init__``); ``None``
            passes where the annotation allows it (``PositiveInt | None``).

    Raises:
        ConfigError: ``SECTION.NAME must be RANGE, got VALUE``.
    """
    for name, kind, optional in _ranged_parameters(function):
        value = arguments.get(name)
        if value is None and optional:
            continue
        try:
            kind(value)
        except ValueError as err:
            raise ConfigError(f"{section}.{name} {err}") from None
