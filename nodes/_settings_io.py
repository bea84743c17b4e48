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


def validator(table: Optional[SettingsTable], names: Optional[Iterable[str]] = None,
              extra: Optional[Callable[[Mapping[str, Any]], None]] = None,
              more: Iterable[str] = (), combos: Iterable[str] = ()) -> classmethod:
    """A ``validate_inputs`` classmethod checking ``names`` (default: the whole table) by their records.

    ``extra(values)`` runs after the records' checks with every named value (None = linked) and raises
    ValueError for rules beyond one setting (cross-field rules, a curve's syntax); ``more`` names inputs that
    are not settings but that ``extra`` needs. ``combos`` names the node's other COMBO inputs (file lists,
    samplers): each value must be one of the options the node's schema offers now. The host does not check a
    V3 node's COMBO values itself on v0.3.64 (it checks only V1 list types), and on v0.8.0 it skips inputs that
    ``validate_inputs`` names. The method's signature lists the inputs by name, as the host reads it
    (``inspect.getfullargspec``)."""
    names = (list(table) if table is not None else []) if names is None else list(names)
    combos = list(combos)
    params = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
        for n in names + list(more) + combos]

    order = names + list(more) + combos

    def validate_inputs(cls, *args, **values):
        values = {**dict(zip(order, args)), **values}   # positional arguments in the signature's order
        try:
            for n in names:
                v = values.get(n)
                if v is not None:
                    table[n].check(v)
            if combos:
                _check_combos(cls, combos, values)
            if extra is not None:
                extra(values)
        except ValueError as exc:
            return str(exc)
        return True

    validate_inputs.__signature__ = inspect.Signature(params)
    title = table.title if table is not None else "the node"
    validate_inputs.__doc__ = f"Check {', '.join(names + list(more) + combos)} by {title}'s settings and choices."
    return classmethod(validate_inputs)


def _check_combos(cls, combos, values) -> None:
    """Each named COMBO value is one of the options the node's schema offers now (ValueError naming it)."""
    # define_schema, not GET_SCHEMA: the host validates on a locked class clone that GET_SCHEMA would write to
    options = {i.id: list(getattr(i, "options", None) or []) for i in cls.define_schema().inputs}
    for n in combos:
        v = values.get(n)
        if v is None:
            continue
        allowed = options.get(n, [])
        if v not in allowed:
            shown = ", ".join(map(str, allowed[:8])) + (f", ... ({len(allowed)} in all)" if len(allowed) > 8 else "")
            raise ValueError(f"{n}: {v!r} is not one of its choices ({shown or 'none: the folder is empty'})")
