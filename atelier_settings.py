"""One record for every user setting of the pack: what a node widget, a CLI flag and a web query declare.

Each core declares its settings once, as a :class:`SettingsTable` of :class:`Setting` records (name, CLI
flag, default, bounds or choices, help). Everything else is built from that table:

* the core's config classes check their values with :meth:`Setting.check` and take their defaults from it;
* the nodes build their widgets and their ``validate_inputs`` from it (``nodes/_settings_io.py``);
* the CLIs add their argparse flags with :meth:`SettingsTable.add_arguments`;
* the web routes parse their query strings with :meth:`Setting.parse`.

A bad value raises :class:`SettingError` (a ``ValueError``) that carries the setting's name and label, so a
front end names the input from the record, never by parsing the message.

Pure Python (no torch): every core may import it. Inside the pack the cores import it relatively
(``from ..atelier_settings import ...``); when a core is imported as a top-level package (tests, CLIs run from
the repository root) it is the top-level module ``atelier_settings``.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union, cast

__all__ = ["Setting", "SettingError", "SettingsTable"]

Number = Union[int, float]


class SettingError(ValueError):
    """A setting refused: ``param`` is the setting's name (the node input), ``label`` names it for people
    (``name (--flag)``), the message says the value and what is allowed."""

    def __init__(self, param: str, label: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.label = label


def _fmt(v: Number) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if abs(v) >= 1e6 else f"{v:g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Setting:
    """One user setting.

    Attributes:
        name: the node input's name and the config field's name.
        default: the default value; its type is the setting's kind (bool, int, float or str).
        help: one or two sentences for the tooltip and ``--help``.
        flag: the CLI flag (default ``--`` + name with ``-`` for ``_``).
        min, max: inclusive bounds of a number (None: unbounded on that side).
        multiple: an int must be a multiple of this (1: any).
        step: the widget's step when it is not ``multiple`` (a UI hint, not a rule).
        choices: the allowed strings of a choice setting.
        nullable: None is an allowed value (e.g. "not given"); ``default`` may then be None with ``kind`` set.
        kind: the value's type when ``default`` is None.
    """
    name: str
    default: Any
    help: str = ""
    flag: Optional[str] = None
    min: Optional[Number] = None
    max: Optional[Number] = None
    multiple: Number = 1
    step: Optional[Number] = None
    choices: Optional[Tuple[str, ...]] = None
    nullable: bool = False
    kind: Optional[type] = None

    def __post_init__(self) -> None:
        if self.flag is None:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))
        if self.kind is None:
            if self.default is None:
                raise TypeError(f"setting {self.name}: give kind= when the default is None")
            object.__setattr__(self, "kind", type(self.default))
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.default is not None:
            self.check(self.default)        # a table whose default breaks its own rule fails at import

    @property
    def label(self) -> str:
        """``name (--flag)``: the node input and the CLI flag together, for messages."""
        return f"{self.name} ({self.flag})"

    def allowed(self) -> str:
        """What is allowed, in words (the end of every message)."""
        if self.choices is not None:
            return "choose one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "give true or false"
        if self.kind is str:
            return "give a text"
        what = "an integer" if self.kind is int else "a number"
        lo = "-inf" if self.min is None else _fmt(self.min)
        hi = "inf" if self.max is None else _fmt(self.max)
        step = f" in steps of {_fmt(self.multiple)}" if self.kind is int and self.multiple != 1 else ""
        return f"use {what} in [{lo}, {hi}]{step}"

    def error(self, value: Any, why: str = "is not allowed") -> SettingError:
        """The :class:`SettingError` for ``value``: ``label: value why; allowed``."""
        return SettingError(self.name, self.label, f"{self.label}: {value!r} {why}; {self.allowed()}")

    def check(self, value: Any) -> Any:
        """``value`` checked against the rule and returned in the setting's kind (an int for a float setting
        becomes a float); raises :class:`SettingError`."""
        if value is None:
            if self.nullable:
                return None
            raise self.error(value, "is missing")
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise self.error(value)
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise self.error(value)
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise self.error(value, "is not a text")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(value, "is not a number")
        if self.kind is int:
            if not isinstance(value, int):
                raise self.error(value, "is not an integer")
        else:
            value = float(value)
            if not math.isfinite(value):
                raise self.error(value, "is not finite")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.error(value, "is out of range")
        if self.kind is int and self.multiple != 1 and value % self.multiple:
            raise self.error(value, f"is not a multiple of {_fmt(self.multiple)}")
        return value

    def parse(self, text: str) -> Any:
        """A command-line or query-string value -> the checked value (raises :class:`SettingError`)."""
        raw = text.strip() if isinstance(text, str) else text
        if not isinstance(raw, str):
            return self.check(raw)
        if self.nullable and raw.lower() in ("", "none", "null"):
            return None
        if self.kind is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise self.error(raw)
        if self.kind in (int, float) and self.choices is None:
            try:
                v: Any = int(raw) if self.kind is int else float(raw)
            except ValueError:
                raise self.error(raw, "is not " + ("an integer" if self.kind is int else "a number")) from None
            return self.check(v)
        return self.check(raw)

    def argparse_type(self, text: str) -> Any:
        """``type=`` for argparse: the parsed value, or ``ArgumentTypeError`` with the message."""
        try:
            return self.parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def widget_step(self) -> Optional[Number]:
        """The widget's step: ``step``, else ``multiple`` for ints (None: the widget's own)."""
        if self.step is not None:
            return self.step
        return self.multiple if self.kind is int and self.multiple != 1 else None


@dataclass(frozen=True)
class SettingsTable(Mapping[str, Setting]):
    """The settings of one technique (or one node), by name, in declaration order."""
    title: str
    settings: Tuple[Setting, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.title}: duplicate setting names in {names}")

    def __getitem__(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (s.name for s in self.settings)

    def __len__(self) -> int:
        return len(self.settings)

    def subset(self, names: Iterable[str], title: Optional[str] = None) -> "SettingsTable":
        """A table of some of these settings (e.g. one node's inputs), in the given order."""
        return SettingsTable(title or self.title, tuple(self[n] for n in names))

    def defaults(self) -> Dict[str, Any]:
        """name -> default."""
        return {s.name: s.default for s in self.settings}

    def check(self, values: Mapping[str, Any], *, skip_none: bool = False) -> Dict[str, Any]:
        """Every given value checked (names not in the table are an error); ``skip_none``: a None (an input
        linked from another node, unknown before the run) is passed through unchecked."""
        out: Dict[str, Any] = {}
        for name, v in values.items():
            if name not in self:
                raise SettingError(name, name, f"{name}: unknown setting of {self.title}; "
                                               f"known: {', '.join(self)}")
            out[name] = v if (v is None and skip_none) else self[name].check(v)
        return out

    def add_arguments(self, parser: argparse.ArgumentParser, names: Optional[Sequence[str]] = None,
                      *, defaults: Optional[Mapping[str, Any]] = None) -> None:
        """Add a flag per setting (``names``: some of them): bounds checked at parse time, the default and
        the help from the record; booleans are ``--flag`` / ``--no-flag`` switches."""
        for name in (names if names is not None else list(self)):
            s = self[name]
            flag, kind = cast(str, s.flag), cast(type, s.kind)    # both set by Setting.__post_init__
            default = (defaults or {}).get(name, s.default)
            if kind is bool:
                parser.add_argument(flag, dest=name, default=default, action=argparse.BooleanOptionalAction,
                                    help=s.help)
            elif s.choices is not None:
                parser.add_argument(flag, dest=name, default=default, choices=s.choices, help=s.help)
            else:
                shown = "" if default is None else f" (default {default})"
                parser.add_argument(flag, dest=name, default=default, type=s.argparse_type,
                                    metavar=kind.__name__.upper(), help=s.help + shown)

    def from_args(self, namespace: argparse.Namespace, names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """The parsed flags of these settings as name -> value."""
        return {n: getattr(namespace, n) for n in (names if names is not None else list(self))}

    def parse_query(self, query: Mapping[str, str], names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """A web query's strings -> checked values; a setting absent from the query takes its default."""
        return {n: (self[n].parse(query[n]) if n in query else self[n].default)
                for n in (names if names is not None else list(self))}
