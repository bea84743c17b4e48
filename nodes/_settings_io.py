"""The node side of the settings tables (``atelier_settings``): one widget factory, one ``validate_inputs``.

* :func:`widget` turns a :class:`~atelier_settings.Setting` into the V3 input with its default, bounds, step,
  choices and tooltip.
* :func:`validator` builds a node's ``validate_inputs`` from a table. The host skips its own min/max and
  choice checks for every input that ``validate_inputs`` names (``execution.validate_inputs``), so the
  validator checks every one of them by the record: bounds, multiples, choices, types. It returns True or the
  record's message, which names the input; an input linked from another node (None at validation time) is
  checked when the node runs.
"""
import inspect
from typing import Any, Callable, Iterable, Mapping, Optional

from comfy_api.latest import io

from ..atelier_settings import Setting, SettingError, SettingsTable

__all__ = ["widget", "widgets", "validator", "Setting", "SettingError", "SettingsTable"]


def widget(s: Setting, *, tooltip: Optional[str] = None, optional: bool = False, **extra: Any) -> Any:
    """The V3 input of setting ``s`` (``tooltip`` overrides the record's help; ``extra`` goes to the input)."""
    tip = s.help if tooltip is None else tooltip
    if s.choices is not None:
        return io.Combo.Input(s.name, options=list(s.choices), default=s.default, tooltip=tip, optional=optional,
                              **extra)
    if s.kind is bool:
        return io.Boolean.Input(s.name, default=s.default, tooltip=tip, optional=optional, **extra)
    if s.kind is str:
        return io.String.Input(s.name, default=s.default, tooltip=tip, optional=optional, **extra)
    kw = dict(extra)
    if s.min is not None:
        kw.setdefault("min", s.min)
    if s.max is not None:
        kw.setdefault("max", s.max)
    step = s.widget_step()
    if step is not None:
        kw.setdefault("step", step)
    cls = io.Int.Input if s.kind is int else io.Float.Input
    return cls(s.name, default=s.default, tooltip=tip, optional=optional, **kw)


def widgets(table: SettingsTable, names: Iterable[str], optional: bool = False) -> list:
    """:func:`widget` for each of ``names`` in order."""
    return [widget(table[n], optional=optional) for n in names]


def validator(table: SettingsTable, names: Optional[Iterable[str]] = None,
              extra: Optional[Callable[[Mapping[str, Any]], None]] = None,
              more: Iterable[str] = ()) -> classmethod:
    """A ``validate_inputs`` classmethod checking ``names`` (default: the whole table) by their records.

    ``extra(values)`` runs after the records' checks with every named value (None = linked) and raises
    ValueError for rules beyond one setting (cross-field rules, a curve's syntax); ``more`` names inputs that
    are not settings but that ``extra`` needs. The method's signature lists the inputs by name, as the host
    reads it (``inspect.getfullargspec``)."""
    names = list(table) if names is None else list(names)
    params = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names + list(more)]

    def validate_inputs(cls, **values):
        try:
            for n in names:
                v = values.get(n)
                if v is not None:
                    table[n].check(v)
            if extra is not None:
                extra(values)
        except ValueError as exc:
            return str(exc)
        return True

    validate_inputs.__signature__ = inspect.Signature(params)
    validate_inputs.__doc__ = f"Check {', '.join(names + list(more))} by {table.title}'s settings table."
    return classmethod(validate_inputs)
