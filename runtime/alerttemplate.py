"""Label and annotation templates: a tiny subset of Prometheus's Go templates, no engine eval.

Supported inside ``{{ ... }}`` (with ``{{-`` / ``-}}`` trimming the whitespace beside them)::

    {{ $value }}  {{ .Value }}                  the sample's value, printed as Go prints a float
    {{ $labels.device }}  {{ .Labels.device }}  a label of the sample ("" when it has none)
    {{ $value | humanize }}                     1.235M, 100u (SI prefixes, 4 significant digits)
    {{ $value | humanizePercentage }}           0.1234 -> 12.34%
    {{ printf "%.2f" $value }}                  also {{ $value | printf "%.1f" }}

Values print exactly as Prometheus prints them (``1.234567e+06``, ``+Inf``), so a rendered
annotation is byte-for-byte what Prometheus would send. This module imports only the standard
library: the config validator compiles every template to report a bad one with its path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TypeAlias

__all__ = ["Template", "format_go_float", "humanize", "humanize_percentage"]

Value: TypeAlias = float | str


class Template:
    """A compiled template. Raises ``ValueError`` (with the offending action) if unsupported."""

    __slots__ = ("_parts", "text", "uses_value")

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts: list[str | _Action] = _compile(text)
        self.uses_value = any(isinstance(p, _Action) and p.uses_value for p in self._parts)

    @property
    def is_constant(self) -> bool:
        """Whether rendering always gives the text itself (no actions)."""
        return all(isinstance(part, str) for part in self._parts)

    def render(self, labels: Mapping[str, str], value: float) -> str:
        """The text with every action replaced; a failing action renders as Prometheus's
        ``<error expanding template: ...>`` rather than raising."""
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                out.append(_to_text(part.run(labels, value)))
            except ValueError as exc:
                return f"<error expanding template: {exc}>"
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


# -- Go's float printing ----------------------------------------------------------------------


def format_go_float(value: float) -> str:
    """``value`` as Go's ``fmt`` prints a float64 with ``%v``: shortest digits, ``%e`` form for
    exponents below -4 or from 6 up (``1e+06``, ``123456``, ``1e-05``), ``+Inf``, ``NaN``."""
    if not math.isfinite(value):
        return _special(value)
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    # repr gives the shortest digits that read back as the same float, as Go's %v does.
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    all_digits = "".join(map(str, digit_tuple))
    digits = all_digits.rstrip("0")
    assert isinstance(exponent, int)  # a finite Decimal has an int exponent
    point = len(all_digits) + exponent  # the decimal point sits after this many digits
    prefix = "-" if sign else ""
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    whole, fraction = digits[:point].ljust(point, "0"), digits[point:]
    return f"{prefix}{whole}.{fraction}" if fraction else f"{prefix}{whole}"


def _special(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _go_g4(value: float) -> str:
    """Go's ``%.4g``: Python's, but ``+Inf``/``-Inf``/``NaN`` spelled the Go way."""
    return format(value, ".4g") if math.isfinite(value) else _special(value)


def humanize(value: float) -> str:
    """Prometheus's ``humanize``: 4 significant digits with an SI prefix (k, M, ..., m, u, ...)."""
    if value == 0 or not math.isfinite(value):
        return _go_g4(value)
    prefix = ""
    if abs(value) >= 1:
        for candidate in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = candidate, value / 1000
    else:
        for candidate in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(value) >= 1:
                break
            prefix, value = candidate, value * 1000
    return _go_g4(value) + prefix


def humanize_percentage(value: float) -> str:
    """Prometheus's ``humanizePercentage``: a ratio as a percentage, 4 significant digits."""
    return _go_g4(value * 100) + "%"


_VERB = re.compile(r"%([-+ 0#]*)(\d*)(?:\.(\d+))?([a-zA-Z%])")


def go_printf(fmt: str, *args: Value) -> str:
    """Go's ``printf`` for the verbs templates use on values: f F e E g G v s and ``%%``.

    Raises ``ValueError`` for other verbs or a missing argument.
    """
    remaining = list(args)

    def one(match: re.Match[str]) -> str:
        flags, width, precision, verb = match.groups()
        if verb == "%":
            return "%"
        if not remaining:
            raise ValueError(f"printf {fmt!r}: missing argument for %{verb}")
        arg = remaining.pop(0)
        if verb in "vs" or isinstance(arg, str):
            return f"%{flags}{width}s" % _as_verb(verb, arg)
        if verb not in "fFeEgG":
            raise ValueError(f"printf {fmt!r}: unsupported verb %{verb}")
        if not math.isfinite(arg):
            return f"%{flags.replace('0', '')}{width}s" % _special(arg)
        spec = f"%{flags}{width}" + (f".{precision}" if precision is not None else "") + verb
        return spec % arg

    return _VERB.sub(one, fmt)


def _as_verb(verb: str, arg: Value) -> str:
    """What Go prints for ``%v``/``%s``, or for a verb that does not fit the argument's type."""
    if verb == "v" or (verb == "s" and isinstance(arg, str)):
        return _to_text(arg)
    kind = "string" if isinstance(arg, str) else "float64"
    return f"%!{verb}({kind}={_to_text(arg)})"


def _to_text(value: Value) -> str:
    return value if isinstance(value, str) else format_go_float(value)


# -- compiling --------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_WORD = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<pipe>\|)|(?P<word>[$.]?[A-Za-z_][\w.]*))'
)
_FUNCTIONS: dict[str, Callable[..., Value]] = {
    "humanize": lambda value: humanize(_as_float(value)),
    "humanizePercentage": lambda value: humanize_percentage(_as_float(value)),
    "printf": go_printf,
    "toUpper": lambda value: _to_text(value).upper(),
    "toLower": lambda value: _to_text(value).lower(),
}
_STRING_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}


def _as_float(value: Value) -> float:
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"can't convert {value!r} to float") from None


class _Action:
    """One ``{{ ... }}``: a pipeline of commands, each fed the previous one's result."""

    __slots__ = ("commands", "uses_value")

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.uses_value = any(w in ("$value", ".Value") for c in commands for w in c)

    def run(self, labels: Mapping[str, str], value: float) -> Value:
        result: Value | None = None
        for command in self.commands:
            args = [_operand(word, labels, value) for word in command[1:]]
            head = command[0]
            if head in _FUNCTIONS:
                result = _FUNCTIONS[head](*args, *([] if result is None else [result]))
            else:
                result = _operand(head, labels, value)
        assert result is not None
        return result


def _operand(word: str, labels: Mapping[str, str], value: float) -> Value:
    if word in ("$value", ".Value"):
        return value
    if word[0] in '"`':
        return word[1:-1] if word[0] == "`" else _unescape(word[1:-1])
    return labels.get(word.split(".")[-1], "")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _STRING_ESCAPES.get(m.group(1), m.group(1)), text)


def _compile(text: str) -> list[str | _Action]:
    parts: list[str | _Action] = []
    position = 0
    for match in _ACTION.finditer(text):
        literal = text[position : match.start()]
        parts.append(literal.rstrip() if match.group(1) else literal)
        parts.append(_parse_action(match.group(2), match.group()))
        position = match.end()
        if match.group(3):
            while position < len(text) and text[position].isspace():
                position += 1
    rest = text[position:]
    if "{{" in rest:
        raise ValueError(f"unclosed action in template {text!r}: '{{{{' without '}}}}'")
    parts.append(rest)
    return [part for part in parts if part != ""]


def _parse_action(body: str, shown: str) -> _Action:
    words: list[str] = []
    commands: list[list[str]] = [words]
    position = 0
    while body[position:].strip():
        match = _WORD.match(body, position)
        if match is None or match.end() == position:
            raise ValueError(f"unsupported template action {shown}")
        if match.group("pipe"):
            words = []
            commands.append(words)
        else:
            words.append(match.group("string") or match.group("word"))
        position = match.end()
    for command in commands:
        _check_command(command, shown)
    return _Action(commands)


def _check_command(command: list[str], shown: str) -> None:
    if not command:
        raise ValueError(f"empty command in template action {shown}")
    head, args = command[0], command[1:]
    if head in _FUNCTIONS:
        if head == "printf" and (not args or args[0][0] not in '"`'):
            example = 'printf "%.2f" $value'
            raise ValueError(f"printf needs a quoted format first, e.g. {example}: {shown}")
    elif args:
        raise ValueError(f"{head!r} is not a function ({', '.join(_FUNCTIONS)}): {shown}")
    for word in command:
        if word not in _FUNCTIONS and not _is_operand(word):
            raise ValueError(
                f"unsupported {word!r} in {shown}: use $value, $labels.<name>, a quoted string "
                f"or one of {', '.join(_FUNCTIONS)}"
            )


def _is_operand(word: str) -> bool:
    if word in ("$value", ".Value") or word[0] in '"`':
        return True
    return re.fullmatch(r"(?:\$labels|\.Labels)\.[A-Za-z_]\w*", word) is not None
