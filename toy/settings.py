"""Every setting of the simulator, declared once.

A `Setting` holds a setting's name, symbol, default, range, kind, help text, command-line flag, its
widget range in the app, and whether moving it recompiles the sampler. Everything else derives from
`SETTINGS`: the fields and defaults of `GuidanceConfig` and their validation, the command-line
options of `compare`, `mechanism` and `toy.figures` (`add_options`, `--set NAME=VALUE`), the app's
widgets and its URL codec (`Setting.from_text` / `Setting.to_text`), the "Paper defaults" text and
the option table of docs/cli.md (`options_table`). Which methods read a setting is the method
registry's answer (`toy.guidance.Method.params`).

A guidance method from outside the package declares its own settings with the same class
(`toy.guidance.register(..., settings=[Setting(...)])`); they join `SETTINGS` when it registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from toy.errors import ToyError, check_finite, check_int

KINDS = ("float", "int", "choice", "pair", "ints")
SEED_MAX = 2**31 - 1                    # one range for every seed of every command and the app
MAX_TEXT = 10_000                       # longest text a setting's value is read from (URL, --set)


@dataclass(frozen=True)
class Setting:
    """One setting. `low`/`high` bound a number, each end of a pair, or each entry of a list of ints;
    `choices` list a choice's values. `runtime=True`: a runtime input of the compiled sampler, so moving
    it never recompiles; False: part of the program (a new value compiles a new one)."""

    name: str                            # the field name, the JSON key and the --set name
    default: Any
    low: float | None = None
    high: float | None = None
    kind: str = "float"                  # float, int, choice, pair (ordered lo ≤ hi), ints (a list of ints)
    help: str = ""
    symbol: str = ""                     # λ, ω, … (shown with the label)
    label: str = ""                      # the human name in errors, widgets and tables
    flag: str | None = None              # the command-line option; default --NAME-WITH-DASHES
    runtime: bool = False
    low_open: bool = False
    high_open: bool = False
    optional: bool = False               # None is allowed (and means "not set")
    choices: tuple = ()
    ui: tuple | None = None              # the app's widget range (lo, hi, step) where narrower than the range
    ui_default: Any = None               # the app's starting value where it differs from the default (why: help)
    group: str = "guidance"              # guidance (GuidanceConfig), sampler, run, or app (the app's view)
    key: str | None = None               # the app's widget key and URL key; default the name
    widget: bool = True                  # shown as a widget in the app when a chosen method reads it

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ToyError(f"setting {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.name.isidentifier():
            raise ToyError(f"setting name {self.name!r} must be a Python identifier (it is a keyword argument)")
        if self.kind == "choice":
            if not self.choices:
                raise ToyError(f"setting {self.name!r}: a choice needs its choices")
        elif self.low is None or self.high is None:
            raise ToyError(f"setting {self.name!r} declares no range: give both low and high "
                           f"(math.inf for an open end)")
        if not self.optional or self.default is not None:
            self.check(self.default)             # a default outside its own range is a declaration error

    @property
    def title(self) -> str:
        """"guidance scale λ": the label with its symbol, as errors and widgets show it."""
        base = self.label or self.name
        return f"{base} {self.symbol}".strip()

    @property
    def app_key(self) -> str:
        return self.key or self.name

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def range_text(self) -> str:
        if self.kind == "choice":
            return ", ".join(map(str, self.choices))
        lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
        num = (lambda v: "∞" if v == math.inf else "−∞" if v == -math.inf else f"{v:g}")
        body = f"{lo}{num(self.low)}, {num(self.high)}{hi}"
        return {"pair": f"start ≤ end, each in {body}", "ints": f"integers in {body}"}.get(self.kind, body)

    def _bounds(self):
        return dict(low=None if self.low == -math.inf else self.low, high=None if self.high == math.inf else self.high,
                    low_open=self.low_open, high_open=self.high_open)

    def check(self, value):
        """The value normalised (float, int, tuple), or ToyError naming the setting and its range."""
        if value is None and self.optional:
            return None
        name = self.title
        if self.kind == "choice":
            if value not in self.choices:
                raise ToyError(f"{name} must be one of {self.range_text}, got {value!r}")
            return value
        if self.kind == "float":
            return check_finite(name, value, **self._bounds())
        if self.kind == "int":
            b = self._bounds()
            return check_int(name, value, low=b["low"], high=b["high"])
        try:
            items = tuple(value)
        except TypeError:
            raise ToyError(f"{name} must be {'two numbers' if self.kind == 'pair' else 'a list of integers'}, "
                           f"got {value!r}") from None
        if self.kind == "pair":
            if len(items) != 2:
                raise ToyError(f"{name} must be two numbers (start, end), got {value!r}")
            lo, hi = (check_finite(f"{name} {end}", v, **self._bounds()) for end, v in zip(("start", "end"), items))
            if lo > hi:
                raise ToyError(f"{name} start must be <= end, got ({lo:g}, {hi:g})")
            return (lo, hi)
        b = self._bounds()
        return tuple(check_int(f"{name} entry", v, low=b["low"], high=b["high"]) for v in items)

    def from_text(self, text: str):
        """Read a value from text (a URL, `--set NAME=VALUE`, a command-line option): checked, or one
        ToyError. Pairs and lists are comma-separated; "none" clears an optional setting."""
        text = str(text)
        if len(text) > MAX_TEXT:
            raise ToyError(f"{self.title}: a value of {len(text)} characters is longer than {MAX_TEXT}")
        t = text.strip()
        if self.optional and t.lower() in ("", "none"):
            return None
        if self.kind == "choice":
            by_text = {str(c): c for c in self.choices}
            if t not in by_text:
                raise ToyError(f"{self.title} must be one of {self.range_text}, got {text!r}")
            return by_text[t]
        parts = [p.strip() for p in t.split(",")] if self.kind in ("pair", "ints") else [t]
        parts = [p for p in parts if p] if self.kind == "ints" else parts
        num = int if self.kind in ("int", "ints") else float
        try:
            values = [num(p) for p in parts]
        except ValueError:
            what = "an integer" if num is int else "a number"
            raise ToyError(f"{self.title}: not {what}: {text!r} (allowed: {self.range_text}"
                           f"{', comma-separated' if self.kind in ('pair', 'ints') else ''})") from None
        return self.check(values[0] if self.kind in ("float", "int") else values)

    def to_text(self, value) -> str:
        """The inverse of `from_text`."""
        if value is None:
            return "none"
        if self.kind in ("pair", "ints"):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    @property
    def start(self):
        """The app's starting value."""
        return self.default if self.ui_default is None else self.ui_default

    @property
    def widget_range(self) -> tuple:
        """(lo, hi, step) of the app's widget: `ui` where declared, else the range."""
        if self.ui is not None:
            return self.ui
        return (self.low, self.high, 1 if self.kind in ("int", "ints") else 0.05)


def _s(name, default, low=None, high=None, **kw) -> Setting:
    return Setting(name, default, low, high, **kw)


INF = math.inf
_BUILTIN = [
    # -- guidance: GuidanceConfig's fields -----------------------------------------------------------------
    _s("scale", 3.0, 0.0, INF, symbol="λ", label="guidance scale", flag="--guidance-scale", runtime=True, key="lam",
       ui=(0.0, 10.0, 0.1), help="λ = 1: no guidance (plain conditional sampling); the paper's 3 by default"),
    _s("s2_scale", 0.25, 0.0, INF, symbol="ω", label="S² scale", runtime=True, key="omega", ui=(0.0, 2.0, 0.05),
       help="ω = 0: S² is CFG; the paper's 0.25"),
    _s("drop_ratio", 0.1, 0.0, 1.0, label="drop ratio", low_open=True, high_open=True, runtime=True, widget=False,
       help="fraction of the droppable blocks one mask drops (the paper's ~10%)"),
    _s("num_drop", None, 1, 64, kind="int", label="blocks dropped per mask", optional=True, runtime=True,
       ui=(1, 7, 1), ui_default=1, help="overrides the drop ratio when set (the app: out of 7 droppable blocks)"),
    _s("exclude", (0,), 0, 63, kind="ints", label="excluded blocks", flag="--exclude", widget=False,
       help="blocks never dropped (at least the first, structurally critical)"),
    _s("interval", (0.1, 0.9), 0.0, 1.0, kind="pair", label="interval", runtime=True, ui=(0.0, 1.0, 0.05),
       help="fractions of the sampler steps where S² acts (the paper's central 80%); CFG elsewhere"),
    _s("num_masks", 4, 1, 64, kind="int", label="num_masks (N)", ui=(1, 16, 1),
       help="N sub-networks per step of naive S² (paper Eq. 3)"),
    _s("fixed_blocks", (1,), 0, 63, kind="ints", label="fixed block", runtime=True, ui=(1, 7, 1),
       help="the blocks fixed-block S² drops at every step (paper Fig. 7c/d)"),
    _s("cfgpp_scale", 0.6, 0.0, 1.0, symbol="λ'", label="CFG++ scale", help="CFG++'s own scale, in [0, 1]"),
    _s("zero_init_steps", 1, 0, 10_000, kind="int", label="zero_init_steps", ui=(0, 8, 1),
       help="CFG-Zero*: sampler steps with ε̃ = 0 at the start"),
    _s("apg_eta", 0.0, 0.0, INF, symbol="η", label="APG eta", ui=(0.0, 2.0, 0.05), help="APG: weight of the parallel component"),
    _s("apg_momentum", -0.5, -1.0, 1.0, symbol="β", label="APG momentum", low_open=True, high_open=True, ui=(-0.95, 0.95, 0.05),
       help="APG: momentum of the running average (negative, as in the paper)"),
    _s("apg_norm_threshold", 4.0, 0.0, INF, symbol="r", label="APG norm threshold", low_open=True, ui=(0.25, 20.0, 0.25),
       help="APG: the largest norm of the guidance update (data units)"),
    _s("gi_sigma", (0.28, 5.42), 0.0, INF, kind="pair", label="guidance-interval σ", ui=(0.0, 20.0, 0.02),
       help="guidance interval: CFG for σ in (lo, hi] (EDM2's values)"),
    # -- the sampler and the run -----------------------------------------------------------------------------
    _s("steps", 32, 1, 10_000, kind="int", label="steps", group="sampler", ui=(4, 128, 1), ui_default=24,
       help="sampler steps (the app starts at 24 Heun steps: their error is a fraction of the sampling noise of "
            "1,000 samples)"),
    _s("solver", "heun", kind="choice", choices=("heun", "euler"), label="solver", group="sampler",
       help="EDM's Heun (second order) or Euler"),
    _s("seed", 0, 0, SEED_MAX, kind="int", label="seed", group="run", help="every random draw of a run derives from it"),
    _s("label", 0, 0, 63, kind="int", label="label", group="run", help="the class sampled and measured"),
    _s("samples", 1000, kind="choice", choices=(200, 500, 1000, 2000, 5000, 10000, 20000), label="samples", group="app",
       help="per method; more: smoother plots, slower redraws (the command line takes any count with --samples)"),
    _s("ideal_blur", 1.0, 0.0, INF, symbol="δ", label="ideal weak model", low_open=True, group="run", key="delta",
       ui=(0.05, 3.0, 0.05), help="δ of the ideal weak model: the truth with every covariance widened by δ²I"),
]

SETTINGS: dict[str, Setting] = {s.name: s for s in _BUILTIN}
BUILTIN = tuple(SETTINGS)
GUIDANCE = tuple(s.name for s in _BUILTIN if s.group == "guidance")    # GuidanceConfig's fields, in order


def declare(settings: Iterable[Setting], owner: str) -> None:
    """Add a plugin's settings to SETTINGS (after `check_new`)."""
    new = check_new(settings, owner)
    for s in new:
        SETTINGS[s.name] = s


def check_new(settings: Iterable[Setting], owner: str) -> list[Setting]:
    """The settings a plugin declares, checked: Setting objects, names not declared yet, none twice."""
    new = list(settings)
    for s in new:
        if not isinstance(s, Setting):
            raise ToyError(f"{owner}: settings must be toy.guidance.Setting objects, got {s!r}")
        if s.name in SETTINGS:
            raise ToyError(f"{owner}: setting {s.name!r} is already declared"
                           f"{' by the simulator' if s.name in BUILTIN else ''}; read it or choose another name")
    if len({s.name for s in new}) != len(new):
        raise ToyError(f"{owner}: declares a setting name twice")
    return new


def get(name: str) -> Setting:
    if name not in SETTINGS:
        raise ToyError(f"unknown setting {name!r}: choose from {', '.join(SETTINGS)}")
    return SETTINGS[name]


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """`--set NAME=VALUE` items → {name: checked value}; an unknown name or a bad value is one ToyError."""
    out = {}
    for item in items:
        name, eq, text = str(item).partition("=")
        if not eq:
            raise ToyError(f"--set takes NAME=VALUE, got {item!r}")
        s = get(name.strip())
        if s.group != "guidance":
            raise ToyError(f"--set {s.name}: set it with {s.option}")
        if s.name in out:
            raise ToyError(f"--set names {s.name!r} more than once")
        out[s.name] = s.from_text(text)
    return out


def _arg_type(s: Setting):
    import argparse

    def parse(text):
        try:
            return s.from_text(text)
        except ToyError as e:          # argparse reports ArgumentTypeError's own words
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = s.name
    return parse


def add_options(parser, names: Iterable[str]) -> None:
    """One command-line option per setting, from its declaration (flag, type, default, help)."""
    for name in names:
        s = SETTINGS[name]
        kw: dict[str, Any] = dict(default=s.default, dest=s.name, type=_arg_type(s),
                                  help=f"{s.title}: {s.help} ({s.range_text}; default {s.to_text(s.default)})")
        if s.kind == "pair":
            kw.update(nargs=2, metavar=("START", "END"), type=str)
        parser.add_argument(s.option, **kw)


def option_value(name: str, raw):
    """A parsed option's value: pairs arrive as two strings (nargs=2) and are checked here."""
    s = SETTINGS[name]
    if s.kind == "pair" and raw is not None and not isinstance(raw, tuple):
        return s.from_text(",".join(raw))
    return raw


def paper_defaults_text() -> str:
    """The paper's settings in one line (the app's "Paper defaults" button says what it sets)."""
    g = {n: SETTINGS[n] for n in ("scale", "s2_scale", "num_drop", "interval")}
    lo, hi = g["interval"].default
    return (f"λ = {g['scale'].default:g}, ω = {g['s2_scale'].default:g}, {g['num_drop'].start} of 7 blocks "
            f"dropped (~{SETTINGS['drop_ratio'].default:.0%}), S² in the central {hi - lo:.0%} of the steps "
            f"({lo:g}-{hi:g}); {SETTINGS['steps'].start} Heun steps, seed {SETTINGS['seed'].default}")


def options_table(names: Iterable[str] | None = None, flagged: Iterable[str] = ()) -> str:
    """The Markdown option table of docs/cli.md (a test checks the docs hold it): the settings in
    `flagged` have an option of their own, the rest are set with `--set NAME=VALUE`."""
    names = list(names) if names is not None else [n for n in SETTINGS if SETTINGS[n].group == "guidance"]
    flagged = set(flagged)
    rows = ["| option | setting | range | default | reads it |", "|---|---|---|---|---|"]
    from toy.guidance import REGISTRY             # which methods read a setting is the registry's answer
    for n in names:
        s = SETTINGS[n]
        readers = [m for m, spec in REGISTRY.items() if n in spec.params] if s.group == "guidance" else ["every run"]
        rows.append(f"| `{s.option if n in flagged else '--set ' + n + '='}` | {s.title}: {s.help} | {s.range_text} | {s.to_text(s.default)} | "
                    f"{', '.join(readers) or '—'} |")
    return "\n".join(rows)


def safe_text(text: str, what: str, limit: int = MAX_TEXT) -> str:
    """Text from a user (a URL value, a pasted box), refused with one ToyError when it is too long or
    holds characters that cannot be encoded (a lone surrogate)."""
    text = str(text)
    if len(text) > limit:
        raise ToyError(f"{what}: {len(text)} characters is more than {limit}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ToyError(f"{what} holds a character that is not valid text (a lone surrogate)") from None
    return text


__all__ = ["Setting", "SETTINGS", "BUILTIN", "GUIDANCE", "SEED_MAX", "declare", "get", "parse_assignments",
           "add_options", "option_value", "paper_defaults_text", "options_table", "safe_text"]
