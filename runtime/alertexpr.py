"""Alert expressions: a small subset of PromQL, parsed by our own parser (never ``eval``).

What a rule's ``expr`` may say::

    memory_percent > 85
    stt_queue_depth{device="kitchen", room=~"k.*"} >= 4
    avg_over_time(cpu_percent[5m]) > 90 and max_over_time(cpu_percent[1m]) > 99
    rate(restarts_total[10m]) > 0.1 or process_rss_bytes > 2e9
    free_memory_bytes unless on(device) maintenance_mode == 1

A vector is a metric selector (a name, optionally with label matchers ``=``, ``!=``, ``=~``,
``!~``) or a range function over one (``avg_over_time``, ``max_over_time``, ``min_over_time``,
``rate``, ``increase`` of ``metric[window]``). Comparisons (``> < >= <= == !=``) filter a vector
by a number on either side; ``and``, ``or`` and ``unless`` combine vectors, matching on every
label but the name unless ``on(...)`` or ``ignoring(...)`` says otherwise. Precedence follows
PromQL: comparisons bind tightest, then ``and``/``unless``, then ``or``; parentheses group.

The tree is made of frozen msgspec Structs, so equal subexpressions compare (and hash) equal:
the evaluator shares their work between rules. This module imports only the standard library
and msgspec (which the config already uses): the config validator loads it to report a bad
expression as a config error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, NamedTuple, TypeAlias, get_args

import msgspec

__all__ = [
    "Compare",
    "CompareOp",
    "Expr",
    "Matcher",
    "Number",
    "RangeCall",
    "RangeFunction",
    "Selector",
    "SetOp",
    "parse_expr",
    "selectors",
]

CompareOp = Literal[">", "<", ">=", "<=", "==", "!="]
MatchOp = Literal["=", "!=", "=~", "!~"]
RangeFunction = Literal["avg_over_time", "max_over_time", "min_over_time", "rate", "increase"]
SetOperator = Literal["and", "or", "unless"]

COMPARE_OPS: tuple[str, ...] = get_args(CompareOp)
RANGE_FUNCTIONS: tuple[str, ...] = get_args(RangeFunction)


class Number(msgspec.Struct, frozen=True):
    """A number literal (only valid as one side of a comparison)."""

    value: float


class Matcher(msgspec.Struct, frozen=True):
    """A label matcher; a missing label matches as the empty string, as in PromQL."""

    label: str
    op: MatchOp
    value: str


class Selector(msgspec.Struct, frozen=True):
    """Every series of metric ``name`` whose labels satisfy all ``matchers``."""

    name: str
    matchers: tuple[Matcher, ...] = ()


class RangeCall(msgspec.Struct, frozen=True):
    """``function(selector[window])``: one value per series from its samples in the window."""

    function: RangeFunction
    selector: Selector
    window_ms: int


class Compare(msgspec.Struct, frozen=True):
    """Keep the samples of ``vector`` for which ``value op threshold`` holds.

    ``number_first`` is ``5 < x``: the comparison reads ``threshold op value`` then, and the
    kept samples still carry the vector's values (PromQL's rule).
    """

    op: CompareOp
    vector: VectorExpr
    threshold: float
    number_first: bool = False


class SetOp(msgspec.Struct, frozen=True):
    """``left and|or|unless right``, matched on ``on`` labels, or on all but ``ignoring``."""

    op: SetOperator
    left: VectorExpr
    right: VectorExpr
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] = ()


VectorExpr: TypeAlias = Selector | RangeCall | Compare | SetOp
Expr: TypeAlias = VectorExpr | Number


# -- tokens ---------------------------------------------------------------------------------


class Token(NamedTuple):
    kind: str  # ident, number, duration, string, op, punct, eof
    text: str
    column: int  # 1-based, for messages


_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_TOKEN = re.compile(
    rf"(?P<space>\s+)"
    rf"|(?P<duration>{_DURATION})(?![\w.])"
    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<string>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)"
    r"|(?P<op>==|!=|>=|<=|=~|!~|[<>=])"
    r"|(?P<punct>[(){}\[\],+*/%^-])"
)
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_MS |= {"w": 7 * 86_400_000, "y": 365 * 86_400_000}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
_KEYWORDS = {"and", "or", "unless", "on", "ignoring", "bool", "by", "without", "offset"}
_FLOAT_WORDS = {"inf": float("inf"), "nan": float("nan")}


def _tokenize(text: str) -> list[Token]:
    """The tokens of ``text``. Raises ``ValueError`` at the first character that starts none."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _error(position + 1, f"unexpected character {text[position]!r}")
        kind = match.lastgroup or "space"
        if kind != "space":
            tokens.append(Token(kind, match.group(), position + 1))
        position = match.end()
    tokens.append(Token("eof", "", len(text) + 1))
    return tokens


def _error(column: int, message: str) -> ValueError:
    return ValueError(f"at column {column}: {message}")


def _describe(token: Token) -> str:
    return "the end of the expression" if token.kind == "eof" else repr(token.text)


def _duration_ms(text: str) -> int:
    return sum(int(n) * _DURATION_MS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", text))


def _unquote(text: str, column: int) -> str:
    if text[0] == "`":
        return text[1:-1]
    out: list[str] = []
    chars = iter(text[1:-1])
    for char in chars:
        if char == "\\":
            escaped = next(chars)
            if escaped not in _ESCAPES:
                raise _error(column, f"unknown escape '\\{escaped}' in string {text}")
            char = _ESCAPES[escaped]
        out.append(char)
    return "".join(out)


# -- the parser -----------------------------------------------------------------------------


def parse_expr(text: str) -> VectorExpr:
    """The tree of an alert expression.

    Raises ``ValueError`` with the column and what was expected when ``text`` is not an
    expression of the supported subset, or is not a vector (a bare number can never alert).
    """
    if not isinstance(text, str):
        raise TypeError(f"expr must be a string, got {type(text).__name__}")
    parser = _Parser(_tokenize(text))
    tree = parser.parse_or()
    parser.expect_end()
    if isinstance(tree, Number):
        raise _error(1, "an alert expression must select a metric, e.g. 'memory_percent > 85'")
    return tree


class _Parser:
    """Recursive descent over the token list; one method per precedence level."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._index = 0

    @property
    def _peek(self) -> Token:
        return self._tokens[self._index]

    def _next(self) -> Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _accept(self, text: str) -> bool:
        if self._peek.text == text and self._peek.kind != "string":
            self._index += 1
            return True
        return False

    def _expect(self, text: str, what: str) -> Token:
        token = self._next()
        if token.text != text or token.kind == "string":
            raise _error(token.column, f"expected {what}, got {_describe(token)}")
        return token

    def expect_end(self) -> None:
        token = self._peek
        if token.kind != "eof":
            hint = " (arithmetic is not supported)" if token.text in "+*/%^" else ""
            raise _error(token.column, f"unexpected {_describe(token)}{hint}")

    def parse_or(self) -> Expr:
        left = self.parse_and()
        while self._peek.text == "or":
            left = self._set_op(left, self.parse_and)
        return left

    def parse_and(self) -> Expr:
        left = self.parse_compare()
        while self._peek.text in ("and", "unless"):
            left = self._set_op(left, self.parse_compare)
        return left

    def _set_op(self, left: Expr, parse_right: Callable[[], Expr]) -> SetOp:
        token = self._next()
        on, ignoring = self._matching()
        right = parse_right()
        if isinstance(left, Number) or isinstance(right, Number):
            message = f"'{token.text}' needs a vector on both sides, not a number"
            raise _error(token.column, message)
        op: SetOperator = token.text  # type: ignore[assignment]  # the caller checked it
        return SetOp(op, left, right, on, ignoring)

    def _matching(self) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        if self._accept("on"):
            return self._label_list(), ()
        if self._accept("ignoring"):
            return None, self._label_list()
        return None, ()

    def _label_list(self) -> tuple[str, ...]:
        self._expect("(", "'(' and a list of label names")
        labels: list[str] = []
        while not self._accept(")"):
            labels.append(self._label_name())
            if not self._accept(","):
                self._expect(")", "',' or ')'")
                break
        return tuple(labels)

    def _label_name(self) -> str:
        token = self._next()
        if token.kind != "ident" or ":" in token.text:
            raise _error(token.column, f"expected a label name, got {_describe(token)}")
        return token.text

    def parse_compare(self) -> Expr:
        left = self.parse_primary()
        while self._peek.kind == "op" and self._peek.text in COMPARE_OPS:
            token = self._next()
            if self._accept("bool"):
                raise _error(token.column, "the 'bool' modifier is not supported")
            right = self.parse_primary()
            left = _compare(token, left, right)
        return left

    def parse_primary(self) -> Expr:
        token = self._peek
        if token.text == "(" and token.kind == "punct":
            self._next()
            inner = self.parse_or()
            self._expect(")", "')'")
            return inner
        if token.text == "-" or token.kind == "number":
            return self._number()
        if token.kind == "ident" and token.text.lower() in _FLOAT_WORDS:
            return self._number()
        if token.kind == "ident" and token.text not in _KEYWORDS:
            return self._call() if self._tokens[self._index + 1].text == "(" else self._selector()
        if token.kind == "duration":
            message = f"a duration ({token.text}) belongs inside [...] after a metric"
            raise _error(token.column, message)
        if token.text == "{":
            raise _error(token.column, "a selector needs a metric name before '{'")
        expected = "expected a metric, a function or a number"
        raise _error(token.column, f"{expected}, got {_describe(token)}")

    def _number(self) -> Number:
        sign = -1.0 if self._accept("-") else 1.0
        token = self._next()
        if token.kind == "number":
            return Number(sign * float(token.text))
        if token.kind == "ident" and token.text.lower() in _FLOAT_WORDS:
            return Number(sign * _FLOAT_WORDS[token.text.lower()])
        raise _error(token.column, f"expected a number after '-', got {_describe(token)}")

    def _call(self) -> RangeCall:
        token = self._next()
        if token.text not in RANGE_FUNCTIONS:
            supported = ", ".join(RANGE_FUNCTIONS)
            raise _error(token.column, f"unknown function {token.text!r}; supported: {supported}")
        self._expect("(", "'('")
        selector, window_ms = self._selector_and_window()
        if window_ms is None:
            example = f"{token.text}({selector.name}[5m])"
            raise _error(self._peek.column, f"{token.text}() needs a range, e.g. {example}")
        self._expect(")", f"')' to close {token.text}(")
        function: RangeFunction = token.text  # type: ignore[assignment]  # checked above
        return RangeCall(function, selector, window_ms)

    def _selector(self) -> Selector:
        column = self._peek.column
        selector, window_ms = self._selector_and_window()
        if window_ms is not None:
            example = f"avg_over_time({selector.name}[...])"
            raise _error(column, f"a range must be inside a function, e.g. {example}")
        return selector

    def _selector_and_window(self) -> tuple[Selector, int | None]:
        token = self._next()
        if token.kind != "ident":
            raise _error(token.column, f"expected a metric name, got {_describe(token)}")
        matchers = self._matchers() if self._peek.text == "{" else ()
        selector = Selector(token.text, matchers)
        if self._peek.text == "offset":
            raise _error(self._peek.column, "'offset' is not supported")
        if not self._accept("["):
            return selector, None
        window = self._next()
        if window.kind != "duration" or _duration_ms(window.text) == 0:
            raise _error(window.column, f"expected a window like 5m, got {_describe(window)}")
        self._expect("]", "']'")
        return selector, _duration_ms(window.text)

    def _matchers(self) -> tuple[Matcher, ...]:
        self._expect("{", "'{'")
        matchers: list[Matcher] = []
        while not self._accept("}"):
            matchers.append(self._matcher())
            if not self._accept(","):
                self._expect("}", "',' or '}'")
                break
        return tuple(matchers)

    def _matcher(self) -> Matcher:
        label = self._label_name()
        op = self._next()
        if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
            expected = f"expected one of = != =~ !~ after {label!r}"
            raise _error(op.column, f"{expected}, got {_describe(op)}")
        value = self._next()
        if value.kind != "string":
            raise _error(value.column, f"expected a quoted string, got {_describe(value)}")
        text = _unquote(value.text, value.column)
        if op.text in ("=~", "!~"):
            try:
                re.compile(text)
            except re.error as exc:
                raise _error(value.column, f"bad regular expression {text!r}: {exc}") from None
        match_op: MatchOp = op.text  # type: ignore[assignment]  # checked above
        return Matcher(label, match_op, text)


def _compare(token: Token, left: Expr, right: Expr) -> Compare:
    op: CompareOp = token.text  # type: ignore[assignment]  # the caller checked it
    if isinstance(left, Number) and isinstance(right, Number):
        raise _error(token.column, "comparing two numbers never selects a metric")
    if isinstance(right, Number):
        assert not isinstance(left, Number)
        return Compare(op, left, right.value)
    if isinstance(left, Number):
        return Compare(op, right, left.value, number_first=True)
    message = f"'{op}' compares a vector with a number; comparing two vectors is not supported"
    raise _error(token.column, message)


def selectors(tree: Expr) -> list[Selector | RangeCall]:
    """The selectors and range calls in ``tree``, left to right (what it reads)."""
    match tree:
        case Selector() | RangeCall():
            return [tree]
        case Compare():
            return selectors(tree.vector)
        case SetOp():
            return selectors(tree.left) + selectors(tree.right)
    return []
