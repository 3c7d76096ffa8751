"""Alert expressions and templates: what parses to what, every error with its column, and a
bad one reported as a config error with its $.path."""

from __future__ import annotations

import math

import pytest
import yaml

from runtime.alertexpr import (
    Compare,
    Matcher,
    RangeCall,
    Selector,
    SetOp,
    parse_expr,
    selectors,
)
from runtime.alerttemplate import Template, format_go_float, go_printf, humanize
from runtime.config import parse_config
from runtime.exceptions import ConfigError


def test_a_comparison_with_matchers_parses_to_a_tree() -> None:
    """Selectors with all four matchers, a comparison, and the number on either side."""
    tree = parse_expr("""stt{device="kitchen", room=~'k.*', mode!="x", zone!~`a|b`,} >= 4""")
    matchers = (
        Matcher("device", "=", "kitchen"), Matcher("room", "=~", "k.*"),
        Matcher("mode", "!=", "x"), Matcher("zone", "!~", "a|b"),
    )  # fmt: skip
    assert tree == Compare(">=", Selector("stt", matchers), 4.0)
    assert parse_expr("90 < x") == Compare("<", Selector("x"), 90.0, number_first=True)
    assert parse_expr("x > -Inf").threshold == -math.inf  # type: ignore[union-attr]
    assert parse_expr(r'x{a="q\"\n"} == 1e3').vector.matchers[0].value == 'q"\n'  # type: ignore[union-attr]


def test_set_operators_follow_promql_precedence() -> None:
    """Comparisons bind tighter than and/unless, which bind tighter than or; parentheses group;
    on() and ignoring() carry their labels."""
    tree = parse_expr("a > 1 or b > 2 and c > 3 unless on(x, y) d")
    assert isinstance(tree, SetOp) and tree.op == "or"
    assert isinstance(tree.right, SetOp) and tree.right.op == "unless"
    assert tree.right.on == ("x", "y")
    grouped = parse_expr("(a > 1 or b > 2) and ignoring(z) c > 3")
    assert isinstance(grouped, SetOp) and grouped.op == "and" and grouped.ignoring == ("z",)
    assert parse_expr("a and on() b").on == ()  # type: ignore[union-attr]


def test_range_functions_take_a_window() -> None:
    """avg/max/min_over_time, rate and increase take selector[window]; windows add up units."""
    assert parse_expr("rate(requests_total{h='a'}[1h30m]) > 0.1").vector == RangeCall(  # type: ignore[union-attr]
        "rate", Selector("requests_total", (Matcher("h", "=", "a"),)), 5_400_000
    )
    tree = parse_expr("avg_over_time(a[5m]) > 1 and max_over_time(b[250ms]) < 2")
    assert [s.window_ms for s in selectors(tree) if isinstance(s, RangeCall)] == [300_000, 250]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "at column 1: expected a metric, a function or a number, got the end"),
        ("5", "at column 1: an alert expression must select a metric"),
        ("x > 5 @ 10", "at column 7: unexpected character '@'"),
        ("x + 1", "at column 3: unexpected '+' (arithmetic is not supported)"),
        ("(x > 1", "at column 7: expected ')', got the end of the expression"),
        ("x and 5", "at column 3: 'and' needs a vector on both sides, not a number"),
        ("x and on(1) y", "at column 10: expected a label name, got '1'"),
        ("x and on(a b) y", "at column 12: expected ',' or ')', got 'b'"),
        ("x > bool 1", "at column 3: the 'bool' modifier is not supported"),
        ("x > 5m", "at column 5: a duration (5m) belongs inside [...] after a metric"),
        ('{a="b"} > 1', "at column 1: a selector needs a metric name before '{'"),
        ("> 5", "at column 1: expected a metric, a function or a number, got '>'"),
        ("x > -y", "at column 6: expected a number after '-', got 'y'"),
        ("sum(x) > 1", "at column 1: unknown function 'sum'; supported: avg_over_time"),
        ("rate(x) > 1", "at column 7: rate() needs a range, e.g. rate(x[5m])"),
        ("rate(x[5m] > 1", "at column 12: expected ')' to close rate(, got '>'"),
        ("rate(5) > 1", "at column 6: expected a metric name, got '5'"),
        ("x[5m] > 1", "at column 1: a range must be inside a function"),
        ("rate(x[0s]) > 1", "at column 8: expected a window like 5m, got '0s'"),
        ("rate(x[y]) > 1", "at column 8: expected a window like 5m, got 'y'"),
        ('x{a>"b"} > 1', "at column 4: expected one of = != =~ !~ after 'a', got '>'"),
        ("x{a=1} > 1", "at column 5: expected a quoted string, got '1'"),
        ('x{a=~"("} > 1', "at column 6: bad regular expression '('"),
        (r'x{a="\q"} > 1', r"at column 5: unknown escape '\q'"),
        ("1 > 2", "at column 3: comparing two numbers never selects a metric"),
        ("x > y", "at column 3: '>' compares a vector with a number"),
        ("x offset 5m > 1", "at column 3: 'offset' is not supported"),
        ("x{a='b' c='d'}", "at column 9: expected ',' or '}', got 'c'"),
    ],
)
def test_a_bad_expression_says_where_and_what(text: str, error: str) -> None:
    """Each malformed or unsupported expression raises ValueError naming the column."""
    with pytest.raises(ValueError) as raised:
        parse_expr(text)
    assert str(raised.value).startswith(error)


def test_parse_expr_wants_a_string() -> None:
    """A non-string expression is a TypeError."""
    with pytest.raises(TypeError, match="expr must be a string, got int"):
        parse_expr(5)  # type: ignore[arg-type]


def test_equal_expressions_make_equal_trees() -> None:
    """Trees compare and hash by structure (the evaluator shares equal subtrees)."""
    assert parse_expr("a{x='1'} > 2") == parse_expr('a{x="1"}>2')
    assert hash(parse_expr("rate(a[1m]) > 2")) == hash(parse_expr("rate(a[60s]) > 2"))


# -- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "go"),
    [
        (1234567.0, "1.234567e+06"), (123456.0, "123456"), (0.0001, "0.0001"), (1e-05, "1e-05"),
        (-2e21, "-2e+21"), (1e20, "1e+20"), (0.1, "0.1"), (100.0, "100"), (-0.0, "-0"),
        (5.574999999999999, "5.574999999999999"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
        (math.nan, "NaN"), (1.5e-7, "1.5e-07"),
    ],
)  # fmt: skip
def test_values_print_as_go_prints_a_float(value: float, go: str) -> None:
    """{{ $value }} prints like Go's %v: shortest digits, exponent form from 1e+06 and below
    1e-04, +Inf/-Inf/NaN (each checked against promtool while building this)."""
    assert format_go_float(value) == go


def test_template_functions_render_as_prometheus_does() -> None:
    """$labels, .Labels, .Value, humanize, humanizePercentage, printf, toUpper/toLower and
    whitespace trimming."""
    template = Template(
        '{{ $labels.device | toUpper }} {{- " " -}}  at {{ $value | humanize }}B,'
        ' {{ .Value | humanizePercentage }} {{ printf "%.2f" .Value }} {{ .Labels.missing }}.'
    )
    assert template.uses_value and not template.is_constant
    text = template.render({"device": "kitchen"}, 1234567.0)
    assert text == "KITCHEN at 1.235MB, 1.235e+08% 1234567.00 ."
    assert humanize(0.0001) == "100u" and humanize(-2e21) == "-2Z" and humanize(0) == "0"
    assert Template("{{ $labels.a | toLower }}").render({"a": "X"}, 0) == "x"
    assert Template("plain").is_constant and not Template("plain").uses_value


def test_printf_handles_verbs_like_go() -> None:
    """printf: %f %e %g with flags and width, %v, %s, %%, infinities, and Go's marker for a
    verb that does not fit the argument."""
    assert go_printf("%5.1f|%e|%g|%v|%s|%%", 3.14159, 1e6, 0.5, 2.0, "x") == (
        "  3.1|1.000000e+06|0.5|2|x|%"
    )
    assert go_printf("%.2f %s %d", math.inf, 1.5, "y") == "+Inf %!s(float64=1.5) %!d(string=y)"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{ $value", "unclosed action"),
        ("{{ $foo }}", "unsupported '$foo'"),
        ("{{ humanize | }}", "empty command"),
        ("{{ printf $value }}", "printf needs a quoted format first"),
        ("{{ $value $value }}", "'$value' is not a function"),
        ("{{ ( $value ) }}", "unsupported template action"),
        ("{{ $externalLabels.x }}", "unsupported '$externalLabels.x'"),
    ],
)
def test_a_bad_template_is_refused(text: str, error: str) -> None:
    """Unsupported or malformed actions raise ValueError when the template is compiled."""
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace("$", r"\$")):
        Template(text)


def test_a_failing_action_renders_as_prometheus_does() -> None:
    """An action that fails while rendering (a label that is not a number, a printf verb
    without its argument) renders Prometheus's error text instead of raising."""
    assert Template("{{ $labels.a | humanize }}").render({"a": "abc"}, 1.0) == (
        "<error expanding template: can't convert 'abc' to float>"
    )
    assert (
        Template('{{ printf "%f %f" $value }}')
        .render({}, 1.0)
        .startswith("<error expanding template: printf '%f %f': missing argument")
    )
    assert "unsupported verb %x" in Template('{{ printf "%x" $value }}').render({}, 1.0)
    assert Template("{{ $labels.n | humanize }}").render({"n": "2000"}, 0) == "2k"


# -- the config validator ---------------------------------------------------------------------


def test_a_bad_expression_or_template_is_a_config_error_with_its_path() -> None:
    """load/parse_config reports a rule's bad expr, template or recovery name at its $.path."""
    rules = [
        {"name": "Fine", "expr": "memory_percent > 85"},
        {"name": "Bad", "expr": "memory_percent >> 85", "annotations": {"summary": "{{ $x }}"},
         "labels": {"team": "{{ $value"}},
        {"name": "BadAction", "expr": "x > 1", "recovery": ["collect garbage"]},
    ]  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump({"alerts": {"rules": rules}}))
    found = {problem.path: problem.message for problem in raised.value.problems}
    assert sorted(found) == [
        "$.alerts.rules[1].annotations.summary",
        "$.alerts.rules[1].expr",
        "$.alerts.rules[1].labels.team",
        "$.alerts.rules[2].recovery[0]",
    ]
    assert found["$.alerts.rules[1].expr"].startswith("'memory_percent >> 85': at column 17")
    assert "unsupported '$x'" in found["$.alerts.rules[1].annotations.summary"]


def test_the_shipped_rules_parse() -> None:
    """The default rules (and their recovery action) are valid."""
    config = parse_config("")
    assert [parse_expr(rule.expr) for rule in config.alerts.rules]
    assert config.alerts.rules[-1].recovery == ["collect_garbage"]
