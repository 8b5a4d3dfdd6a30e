"""The strategy registry: every strategy is one class, registered by name, that declares its
own options. ``--selection``'s choices and help, the strategy flags, the bench's lists and the
end-to-end tests all read it, so adding a strategy takes its module (found by
``core.strategies`` on import) and its test."""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from open_clip_dissect.errors import InputError

_REGISTRY: Dict[str, type] = {}


@dataclass(frozen=True)
class Option:
    """One option of a strategy: its keyword argument, its command-line flag and its check.

    ``check(value)`` returns None for a good value, else what is wrong ("must be in [0, 1)").
    The flag is shared by every strategy that declares the same one (same name, type, default).
    """

    name: str
    flag: Optional[str]  # None: set by the training run, not a command-line flag
    type: Callable
    default: Any
    help: str
    check: Optional[Callable[[Any], Optional[str]]] = None

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag."""
        return self.flag.lstrip("-").replace("-", "_")

    def validate(self, value):
        problem = self.check(value) if self.check is not None and value is not None else None
        if problem:
            raise InputError(self.flag or self.name, f"{problem}, got {value!r}")
        return value


def in_range(low, high, low_open=False, high_open=False):
    """A check for ``low <(=) value <(=) high``; the error text shows the interval."""

    def check(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            return f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        return None

    return check


def one_of(choices):
    def check(value):
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


def at_least(low):
    def check(value):
        return None if value >= low else f"must be >= {low}"

    return check


# The run's total number of epochs: not a flag; the training run passes it (InfoBatch's anneal).
RUN_EPOCHS = Option("epochs", None, int, 1, "the run's total number of epochs", at_least(1))


def register(cls: type) -> type:
    """Class decorator: make ``cls`` available as ``--selection <cls.name>``."""
    from open_clip_dissect.core.strategies.base import Strategy

    if cls.name in _REGISTRY:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    if cls.needs_history and cls.decide is Strategy.decide:
        # the base decide stores nothing: the history would silently stay empty
        raise TypeError(
            f"strategy {cls.name!r} reads the history, so it must override decide() "
            f"and return the scores to store (Decision.new_history)"
        )
    measured = [w for w, needed in (("loss", cls.needs_loss), ("oracle", cls.needs_oracle)) if needed]
    if not cls.needs_scores and (measured or cls.needs_gradient):
        # without the scoring pass there is nothing to compute them from
        raise TypeError(
            f"strategy {cls.name!r} sets needs_scores = False but reads what the scoring pass "
            f"measures ({', '.join(measured + (['gradient'] if cls.needs_gradient else []))})"
        )
    flags = [o.flag for o in cls.options if o.flag]
    if len(set(flags)) != len(flags):
        raise ValueError(f"strategy {cls.name!r} declares a flag twice: {flags}")
    _REGISTRY[cls.name] = cls
    return cls


def list_strategies() -> List[str]:
    """Every registered strategy name (``--selection``'s choices): by each class's
    ``listing_order``, then in registration order."""
    order = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].listing_order, order[name]))


def declarations(cls: type) -> List[str]:
    """What a strategy class declares it needs or does, in words (the README's strategy table)."""
    words = [
        ("history", cls.needs_history),
        ("per-sample loss", cls.needs_loss),
        ("oracle model", cls.needs_oracle),
        ("gradient proxy", cls.needs_gradient),
        ("its own kept count", cls.variable_kept),
        ("every candidate", cls.keeps_all),
        ("no scoring pass (unless recording)", not cls.needs_scores),
    ]
    return [word for word, declared in words if declared]


def strategy_table() -> str:
    """The markdown table of every registered strategy, from the registry (README, "Strategies")."""
    lines = ["| `--selection` | what it keeps | its flags | reads / keeps |", "| --- | --- | --- | --- |"]
    for name in list_strategies():
        cls = _REGISTRY[name]
        flags = ", ".join(f"`{o.flag}` ({o.default})" for o in cls.options if o.flag) or "-"
        lines.append(f"| `{name}` | {cls.summary} | {flags} | {', '.join(declarations(cls)) or '-'} |")
    return "\n".join(lines) + "\n"


def strategy_class(name: str) -> type:
    if name not in _REGISTRY:
        raise InputError("--selection", f"unknown strategy {name!r}; choose from {list_strategies()}")
    return _REGISTRY[name]


def all_options() -> List[Tuple[Option, List[str]]]:
    """Every distinct command-line option with the strategies that take it, in listing order.
    Strategies that share a flag must declare it alike."""
    found: Dict[str, Tuple[Option, List[str]]] = {}
    for name in list_strategies():
        cls = _REGISTRY[name]
        for option in cls.options:
            if option.flag is None:
                continue
            if option.flag in found:
                known = found[option.flag][0]
                if (known.type, known.default) != (option.type, option.default):
                    raise ValueError(f"{option.flag} is declared differently by {found[option.flag][1]} and {name}")
                found[option.flag][1].append(name)
            else:
                found[option.flag] = (option, [name])
    return list(found.values())


def create_strategy(name: str, **options):
    """The strategy ``name`` with its options by their own names (``momentum=0.8``); options
    left out take their defaults, and every value is checked (``InputError`` naming the flag)."""
    cls = strategy_class(name)
    known = {o.name: o for o in cls.options}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"strategy {name!r} takes the options {sorted(known)}, not {unknown}")
    values = {n: o.validate(options.get(n, o.default)) for n, o in known.items()}
    return cls(**values)
