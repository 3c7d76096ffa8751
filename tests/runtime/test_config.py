"""The typed configuration: defaults, validation of every kind of problem, overrides, units."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
import yaml

from runtime._config_check import format_path
from runtime.channel import POLICIES
from runtime.config import (
    AlertRule,
    Config,
    PluginQuota,
    TaskClassConfig,
    load_config,
    parse_config,
    parse_duration,
    parse_rate,
)
from runtime.exceptions import ConfigError, ConfigProblem

SHIPPED = Path(__file__).resolve().parents[2] / "config.yaml"


def problems_of(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Parse ``text`` expecting a ConfigError; {path: message} of its problems."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env=env or {})
    return {p.path: p.message for p in caught.value.problems}


def struct_types(info: mi.Type, seen: set[type] | None = None) -> list[mi.StructType]:
    """Every Struct type reachable from ``info``."""
    seen = set() if seen is None else seen
    found: list[mi.StructType] = []
    if isinstance(info, mi.StructType):
        if info.cls in seen:
            return found
        seen.add(info.cls)
        found.append(info)
        children = [field.type for field in info.fields]
    elif isinstance(info, mi.Metadata):
        children = [info.type]
    elif isinstance(info, mi.UnionType):
        children = list(info.types)
    elif isinstance(info, mi.DictType):
        children = [info.value_type]
    elif isinstance(info, mi.ListType):
        children = [info.item_type]
    else:
        children = []
    for child in children:
        found += struct_types(child, seen)
    return found


# -- defaults and the shipped file ------------------------------------------------------------


def test_no_path_gives_the_struct_defaults() -> None:
    """load_config() with no path and no overrides is Config()."""
    assert load_config(env={}) == Config()


def test_shipped_config_yaml_equals_the_embedded_defaults() -> None:
    """config.yaml and the Struct defaults cannot drift apart."""
    assert load_config(SHIPPED, env={}) == load_config(env={})


def test_every_field_of_every_struct_is_written_in_config_yaml() -> None:
    """Each key of the schema appears in config.yaml, so each one is documented there."""
    text = SHIPPED.read_text()
    names = {f.encode_name for s in struct_types(mi.type_info(Config)) for f in s.fields}
    missing = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}:", text))
    assert missing == []


def test_every_enum_value_is_documented_in_config_yaml() -> None:
    """Every valid value of every literal key is named in config.yaml."""
    text = SHIPPED.read_text()
    values: set[str] = set()
    for struct in struct_types(mi.type_info(Config)):
        for field in struct.fields:
            if isinstance(field.type, mi.LiteralType):
                values.update(str(v) for v in field.type.values)
    assert sorted(v for v in values if not re.search(rf"\b{v}\b", text)) == []


def test_defaults_survive_a_yaml_round_trip() -> None:
    """Config() dumped to YAML (with the key 'for') parses back to itself."""
    text = yaml.safe_dump(msgspec.to_builtins(Config()))
    assert "for:" in text
    assert parse_config(text, env={}) == Config()


def test_config_is_frozen() -> None:
    """A loaded Config cannot be changed in place."""
    config = load_config(env={})
    with pytest.raises(AttributeError):
        config.sampler.interval_ms = 5  # type: ignore[misc]


def test_mailbox_policies_are_the_channel_policies() -> None:
    """The config accepts exactly the policies a channel knows."""
    config = mi.type_info(Config)
    assert isinstance(config, mi.StructType)
    section = next(f.type for f in config.fields if f.name == "runtime")
    assert isinstance(section, mi.StructType)
    policy = next(f for f in section.fields if f.name == "mailbox_policy")
    assert isinstance(policy.type, mi.LiteralType)
    assert set(policy.type.values) == set(POLICIES)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_document_gives_the_defaults(text: str) -> None:
    """An empty file (or only comments) means every default."""
    assert parse_config(text, env={}) == Config()


def test_a_partial_file_keeps_the_other_defaults() -> None:
    """Keys left out keep their defaults; the ones given are used."""
    config = parse_config("sampler: {interval_ms: 250}\n", env={})
    assert config.sampler.interval_ms == 250
    assert config.sampler.history_path == "var/samples.db"
    assert config.scheduler == Config().scheduler


def test_ints_given_for_float_keys_become_floats() -> None:
    """A float key written as an integer is stored as a float."""
    config = parse_config("runtime: {restart: {period_s: 3}}\n", env={})
    assert config.runtime.restart.period_s == 3.0
    assert type(config.runtime.restart.period_s) is float


def test_anchors_and_merge_keys_work_without_false_duplicates() -> None:
    """YAML anchors and merge keys are supported; a merged key overridden is no duplicate."""
    text = (
        "scheduler:\n  classes:\n"
        "    voice: &base {priority: 1, max_concurrency: 3}\n"
        "    command:\n      <<: *base\n      priority: 2\n"
    )
    classes = parse_config(text, env={}).scheduler.classes
    assert classes["command"] == TaskClassConfig(priority=2, max_concurrency=3)


# -- problems: every kind, all at once --------------------------------------------------------


def test_unknown_key_suggests_the_close_one() -> None:
    """A misspelt key is reported with its path and a did-you-mean."""
    found = problems_of("sampler:\n  intervl_ms: 500\n")
    assert found == {
        "$.sampler.intervl_ms": "unknown key 'intervl_ms'; did you mean 'interval_ms'? (line 2)"
    }


def test_unknown_key_without_a_close_one_lists_the_valid_keys() -> None:
    """An unknown key far from every valid one gets the list of valid keys."""
    message = problems_of("profiler: {zzz: 1}\n")["$.profiler.zzz"]
    assert "expected one of 'enabled', 'loop_lag_threshold_ms', 'heartbeat_ms'" in message


def test_wrong_type_names_expected_and_got_with_the_value() -> None:
    """A wrong type says what was expected and shows the bad value and its kind."""
    found = problems_of("sampler: {interval_ms: fast}\n")
    assert found["$.sampler.interval_ms"] == "expected an integer, got 'fast' (string) (line 1)"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("logging: {console: 1}", "$.logging.console", "expected true or false, got 1 (integer)"),
        ("sampler: {interval_ms: true}", "$.sampler.interval_ms", "got true (boolean)"),
        ("runtime: {mailbox_capacity: 2.5}", "$.runtime.mailbox_capacity", "got 2.5 (number)"),
        ("logging: {file: 3}", "$.logging.file", "expected a string or null, got 3 (integer)"),
        ("cache: {tiers: {}}", "$.cache.tiers", "expected a list, got {} (mapping)"),
        ("sampler: [1]", "$.sampler", "expected a mapping, got [1] (list)"),
        ("sampler:", "$.sampler", "expected a mapping, got null"),
        ("quotas: {plugins: {p: {rate: [1]}}}", "$.quotas.plugins.p.rate", "expected a rate or"),
        ("runtime: {restart: {period_s: .inf}}", "$.runtime.restart.period_s", "finite number"),
    ],
)
def test_wrong_types(text: str, path: str, message: str) -> None:
    """Each wrong kind of value is reported at its path with what was expected."""
    assert message in problems_of(text + "\n")[path]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("scheduler: {classes: {v: {priority: 10}}}", "$.scheduler.classes.v.priority",
         "must be between 0 and 9, got 10"),
        ("runtime: {mailbox_capacity: 0}", "$.runtime.mailbox_capacity", "must be >= 1, got 0"),
        ("quotas: {budget: {cpu_percent: 0}}", "$.quotas.budget.cpu_percent",
         "must be > 0 and <= 100, got 0"),
        ("metrics: {prometheus: {port: 65536}}", "$.metrics.prometheus.port",
         "must be between 0 and 65535, got 65536"),
        ("metrics: {prometheus: {port: -1}}", "$.metrics.prometheus.port", "got -1"),
        ("sampler: {interval_ms: 9}", "$.sampler.interval_ms", "must be >= 10, got 9"),
        ("runtime: {retry: {factor: 0.5}}", "$.runtime.retry.factor", "must be >= 1, got 0.5"),
        ("runtime: {name: ''}", "$.runtime.name", "must not be empty"),
        ("scheduler: {classes: {}}", "$.scheduler.classes", "needs at least 1 entry, got 0"),
    ],
)  # fmt: skip
def test_out_of_range_values(text: str, path: str, message: str) -> None:
    """A value outside its range names the range and the value."""
    assert message in problems_of(text + "\n")[path]


def test_bad_enum_lists_the_valid_values_and_suggests_a_near_one() -> None:
    """A bad literal lists every valid value, and a near miss gets a suggestion."""
    found = problems_of("runtime: {mailbox_policy: rejct}\nlogging: {level: loud}\n")
    assert found["$.runtime.mailbox_policy"].startswith(
        "'rejct' is not one of 'block', 'drop_newest', 'drop_oldest', 'reject'; "
        "did you mean 'reject'?"
    )
    assert found["$.logging.level"] == (
        "'loud' is not one of 'critical', 'debug', 'error', 'info', 'warning' (line 2)"
    )


def test_missing_required_keys() -> None:
    """Keys without a default (a class's priority, a tier's backend) are required."""
    found = problems_of("scheduler: {classes: {x: {}}}\ncache: {tiers: [{name: a}]}\n")
    assert found["$.scheduler.classes.x.priority"] == "missing required key 'priority' (line 1)"
    assert found["$.cache.tiers[0].backend"] == "missing required key 'backend' (line 2)"


def test_invalid_names_and_non_string_keys() -> None:
    """Names must look like names; a key YAML reads as a number or boolean must be quoted."""
    text = "scheduler:\n  classes:\n    1: {priority: 1}\n    'a b': {priority: 2}\n"
    found = problems_of(text)
    assert "must be a string; quote it" in found["$.scheduler.classes['1']"]
    assert "a name starts with a letter" in found["$.scheduler.classes['a b']"]


def test_every_problem_is_reported_at_once() -> None:
    """Problems in many sections come back together, one per path."""
    text = """
runtime: {mailbox_policy: nope, restart: {intensity: -1}}
logging: {level: 3}
scheduler: {thread_workers: 0}
sampler: {interval_ms: x, bogus: 1}
cache: {tiers: [{name: l3, backend: sqlite}]}
quotas: {plugins: {p: {rate: "1/fortnight"}}}
alerts: {rules: [{name: A, expr: "x > 1", for: soon}]}
metrics: {prometheus: {port: 99999}}
"""
    assert set(problems_of(text)) == {
        "$.runtime.mailbox_policy",
        "$.runtime.restart.intensity",
        "$.logging.level",
        "$.scheduler.thread_workers",
        "$.sampler.interval_ms",
        "$.sampler.bogus",
        "$.cache.tiers[0].path",
        "$.quotas.plugins.p.rate",
        "$.alerts.rules[0].for",
        "$.metrics.prometheus.port",
    }


def test_config_error_carries_problems_and_source() -> None:
    """ConfigError is a ValueError with every ConfigProblem and the source named."""
    with pytest.raises(ValueError) as caught:
        parse_config("sampler: {interval_ms: x}\n", source="mine.yaml", env={})
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.source == "mine.yaml"
    assert error.problems == [
        ConfigProblem("$.sampler.interval_ms", "expected an integer, got 'x' (string) (line 1)")
    ]
    assert "mine.yaml" in str(error) and "$.sampler.interval_ms" in str(error)


# -- contradictions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("runtime: {restart: {backoff_initial_ms: 3000, backoff_max_ms: 2000}}",
         "$.runtime.restart.backoff_initial_ms", "3000 is more than backoff_max_ms (2000)"),
        ("runtime: {retry: {initial_ms: 600, max_ms: 500}}",
         "$.runtime.retry.initial_ms", "600 is more than max_ms (500)"),
        ("scheduler: {classes: {v: {priority: 1, max_concurrency: 2, reserved: 3}}}",
         "$.scheduler.classes.v.reserved", "3 is more than max_concurrency (2)"),
        ("scheduler: {classes: {v: {priority: 1, cancel_at_deadline: true}}}",
         "$.scheduler.classes.v.cancel_at_deadline", "true needs a deadline_ms"),
        ("scheduler: {thread_workers: 1, classes: {a: {priority: 1, reserved: 1, "
         "executor: thread}, b: {priority: 2, reserved: 1, executor: thread}}}",
         "$.scheduler.classes", "reserved slots of 'thread' classes sum to 2 (a 1, b 1), "
         "more than thread_workers (1)"),
        ("scheduler: {process_workers: 2, classes: {a: {priority: 9, max_concurrency: 4, "
         "reserved: 3, executor: process}}}",
         "$.scheduler.classes", "more than process_workers (2)"),
        ("scheduler: {process_workers: 0, classes: {bg: {priority: 9, executor: process}}}",
         "$.scheduler.process_workers", "0 leaves no worker for class(es) bg"),
        ("cache: {tiers: [{name: a, backend: sqlite}]}",
         "$.cache.tiers[0].path", "required for backend 'sqlite'"),
        ("cache: {tiers: [{name: a, backend: redis}]}",
         "$.cache.tiers[0].url", "required for backend 'redis'"),
        ("cache: {tiers: [{name: a, backend: redis, url: 'http://x'}]}",
         "$.cache.tiers[0].url", "is not a redis://, rediss:// or unix:// URL"),
        ("cache: {tiers: [{name: a, backend: compressed}]}",
         "$.cache.tiers[0].max_entries", "needs max_entries or max_bytes"),
        ("cache: {tiers: [{name: a, backend: memory, max_entries: 1, url: 'redis://h'}]}",
         "$.cache.tiers[0].url", "only used by backend 'redis', not 'memory'"),
        ("cache: {tiers: [{name: a, backend: redis, url: 'redis://h', path: x.db}]}",
         "$.cache.tiers[0].path", "only used by backend 'sqlite', not 'redis'"),
        ("cache: {tiers: [{name: a, backend: sqlite, path: a.db}, "
         "{name: a, backend: sqlite, path: b.db}]}",
         "$.cache.tiers[1].name", "duplicate tier name 'a'"),
        ("cache: {enabled: true, tiers: []}", "$.cache.tiers", "needs at least one tier"),
        ("quotas: {plugins: {p: {burst: 3}}}", "$.quotas.plugins.p.burst", "needs a rate"),
        ("quotas: {budget: {memory_mb: 100}, plugins: {p: {memory_mb: 101}}}",
         "$.quotas.plugins.p.memory_mb", "101 is more than the runtime budget (100)"),
        ("quotas: {plugins: {p: {cpu_percent: 30}}}",
         "$.quotas.plugins.p.cpu_percent", "30 is more than the runtime budget (20)"),
        ("alerts: {rules: [{name: A, expr: 'x > 1'}, {name: A, expr: 'y > 1'}]}",
         "$.alerts.rules[1].name", "duplicate rule name 'A'"),
        ("alerts: {rules: [{name: A, expr: '  '}]}", "$.alerts.rules[0].expr",
         "must not be blank"),
        ("alerts: {webhook_url: 'example.com/hook'}", "$.alerts.webhook_url",
         "is not an http:// or https:// URL"),
        ("alerts: {alertmanager_url: 'http://'}", "$.alerts.alertmanager_url",
         "is not an http:// or https:// URL"),
    ],
)  # fmt: skip
def test_contradictions(text: str, path: str, message: str) -> None:
    """Values valid alone but contradicting each other are reported at the right path."""
    assert message in problems_of(text + "\n")[path]


def test_a_disabled_cache_may_have_no_tiers() -> None:
    """Only an enabled cache needs a tier."""
    assert parse_config("cache: {enabled: false, tiers: []}\n", env={}).cache.tiers == []


def test_contradictions_are_checked_beside_invalid_entries() -> None:
    """An invalid list item or mapping entry does not hide its siblings' contradictions."""
    text = """
cache:
  tiers:
    - {name: bad, backend: floppy}
    - {name: l1, backend: memory, max_entries: 1}
    - {name: l1, backend: sqlite, path: c.db}
quotas:
  plugins:
    broken: {timeout_s: never}
    greedy: {memory_mb: 5000}
"""
    assert set(problems_of(text)) == {
        "$.cache.tiers[0].backend",
        "$.cache.tiers[2].name",  # numbered as in the file, though tiers[0] was left out
        "$.quotas.plugins.broken.timeout_s",
        "$.quotas.plugins.greedy.memory_mb",
    }


def test_a_struct_with_an_invalid_value_skips_its_own_contradictions() -> None:
    """A bad value is reported alone, not also as a contradiction with a made-up default."""
    text = "runtime: {restart: {backoff_initial_ms: 5000, backoff_max_ms: lots}}\n"
    assert set(problems_of(text)) == {"$.runtime.restart.backoff_max_ms"}


def test_entries_that_are_all_invalid_do_not_trip_emptiness_checks() -> None:
    """When every tier is invalid, 'needs at least one tier' is not claimed as well."""
    assert set(problems_of("cache: {tiers: [{name: a, backend: tape}]}\n")) == {
        "$.cache.tiers[0].backend"
    }


# -- YAML syntax and where problems are ---------------------------------------------------------


def test_yaml_syntax_error_gives_line_and_column() -> None:
    """A syntax error is one problem at $ with its line and column."""
    found = problems_of("sampler:\n  interval_ms: 5\n   enabled: true\n")
    assert list(found) == ["$"]
    assert found["$"].startswith("line 3, column 11: invalid YAML: mapping values are not allowed")


def test_problem_messages_are_single_lines() -> None:
    """Every message fits on one line, even YAML's multi-line ones."""
    texts = ["a: [1,\nb: 2\n", "a: 'unclosed\n", "x: !!python/object:os.system {}\n"]
    for text in texts:
        for message in problems_of(text).values():
            assert "\n" not in message


def test_unsafe_yaml_tags_are_refused() -> None:
    """The loader is safe: a python object tag is an error, never executed."""
    found = problems_of("sampler: !!python/object/apply:os.system ['true']\n")
    assert "could not determine a constructor" in found["$"]


def test_problems_name_the_line_of_the_bad_value() -> None:
    """Messages end with the line of the offending key (or its parent for a missing key)."""
    text = (
        "# header\nsampler:\n  enabled: true\n  interval_ms: x\ncache:\n  tiers:\n    - {name: a}\n"
    )
    found = problems_of(text)
    assert found["$.sampler.interval_ms"].endswith("(line 4)")
    assert found["$.cache.tiers[0].backend"].endswith("(line 7)")


def test_duplicate_keys_are_problems() -> None:
    """YAML silently keeps the last of two equal keys; the config reports it instead."""
    found = problems_of("sampler:\n  interval_ms: 100\n  interval_ms: 200\n")
    assert found == {
        "$.sampler.interval_ms": "duplicate key 'interval_ms', first on line 2 (line 3)"
    }


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_the_top_level_must_be_a_mapping(text: str) -> None:
    """A document that is not a mapping of sections is one problem at $."""
    assert list(problems_of(text)) == ["$"]
    assert problems_of(text)["$"].startswith("expected a mapping of sections, got")


@pytest.mark.parametrize(
    ("segments", "path"),
    [
        ((), "$"),
        (("cache", "tiers", 1, "path"), "$.cache.tiers[1].path"),
        (("scheduler", "classes", "wake_word"), "$.scheduler.classes.wake_word"),
        (("scheduler", "classes", "a b"), "$.scheduler.classes['a b']"),
        (("alerts", "rules", 0, "labels", "x-y"), "$.alerts.rules[0].labels.x-y"),
    ],
)
def test_format_path(segments: tuple[str | int, ...], path: str) -> None:
    """Paths read like JSONPath: dots for names, brackets for indexes and odd keys."""
    assert format_path(segments) == path


# -- durations and rates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25),
     ("1d", 86400.0), ("1w", 604800.0), ("1.5s", 1.5), (" 2m ", 120.0), ("1h0m30s", 3630.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    """Prometheus-style durations become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "5x", "-5s", "5m 30s", "1h+2m"])
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    """Anything but number-unit pairs is refused with the text quoted."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_durations_in_alert_rules_are_stored_in_seconds() -> None:
    """'for' and 'keep_firing_for' accept durations or numbers and store seconds."""
    text = "alerts:\n  rules:\n    - {name: A, expr: 'x > 1', for: 1h30m, keep_firing_for: 90}\n"
    rule = parse_config(text, env={}).alerts.rules[0]
    assert rule == AlertRule(name="A", expr="x > 1", for_=5400.0, keep_firing_for=90.0)


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("10/s", 10.0), ("600/min", 10.0), ("36/h", 0.01), ("3/10s", 0.3), ("1/sec", 1.0),
     ("120 / minute", 2.0), ("5/m", 5 / 60), ("86400/day", 1.0), ("2/500ms", 4.0),
     ("10/seconds", 10.0), ("1.5/S", 1.5)],
)  # fmt: skip
def test_parse_rate(text: str, per_s: float) -> None:
    """Rate strings become calls per second."""
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["10", "10 per second", "10/fortnight", "/s", "x/s", "1/0s"])
def test_parse_rate_rejects_what_is_not_a_rate(text: str) -> None:
    """Anything but N/unit is refused with the text quoted."""
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)


def test_plugin_rates_accept_numbers_and_strings() -> None:
    """A quota rate is calls per second, from a number or a rate string."""
    text = "quotas:\n  plugins:\n    a: {rate: 2, burst: 4}\n    b: {rate: 600/min}\n"
    plugins = parse_config(text, env={}).quotas.plugins
    assert plugins == {"a": PluginQuota(rate=2.0, burst=4), "b": PluginQuota(rate=10.0)}


# -- environment overrides --------------------------------------------------------------------


def test_env_override_sets_a_key_as_a_yaml_scalar() -> None:
    """JARVIS_RUNTIME__SECTION__KEY values are parsed as YAML (ints, bools)."""
    env = {
        "JARVIS_RUNTIME__SAMPLER__INTERVAL_MS": "500",
        "JARVIS_RUNTIME__METRICS__PROMETHEUS__ENABLED": "true",
        "JARVIS_RUNTIME__LOGGING__FILE": "null",
    }
    config = parse_config("", env=env)
    assert config.sampler.interval_ms == 500
    assert config.metrics.prometheus.enabled is True
    assert config.logging.file is None


def test_env_override_names_are_case_insensitive() -> None:
    """Section and key names in a variable match whatever their case."""
    config = parse_config("", env={"JARVIS_RUNTIME__Sampler__Interval_Ms": "250"})
    assert config.sampler.interval_ms == 250


def test_env_override_wins_over_the_file() -> None:
    """An override replaces the file's value; the file's other keys stay."""
    text = "sampler: {interval_ms: 100, retention_s: 60}\n"
    config = parse_config(text, env={"JARVIS_RUNTIME__SAMPLER__INTERVAL_MS": "300"})
    assert (config.sampler.interval_ms, config.sampler.retention_s) == (300, 60)


def test_env_override_inside_a_default_mapping_keeps_its_other_entries() -> None:
    """Overriding one class's key changes only that key of the default classes."""
    config = parse_config("", env={"JARVIS_RUNTIME__SCHEDULER__CLASSES__VOICE__RESERVED": "2"})
    expected = dict(Config().scheduler.classes)
    expected["voice"] = msgspec.structs.replace(expected["voice"], reserved=2)
    assert config.scheduler.classes == expected


def test_env_override_can_add_a_mapping_entry() -> None:
    """A variable may name a new entry, e.g. a plugin's quota."""
    config = parse_config("", env={"JARVIS_RUNTIME__QUOTAS__PLUGINS__WEATHER__RATE": "2/s"})
    assert config.quotas.plugins == {"weather": PluginQuota(rate=2.0)}


def test_env_override_reaches_list_items_by_index() -> None:
    """A list item is named by its index."""
    config = parse_config("", env={"JARVIS_RUNTIME__CACHE__TIERS__0__MAX_ENTRIES": "5"})
    assert config.cache.tiers[0].max_entries == 5
    assert config.cache.tiers[1] == Config().cache.tiers[1]


def test_env_override_may_set_a_whole_value_in_flow_yaml() -> None:
    """The value is YAML, so a whole mapping or list can be given."""
    env = {"JARVIS_RUNTIME__CACHE__TIERS": "[{name: only, backend: memory, max_entries: 9}]"}
    tiers = parse_config("", env=env).cache.tiers
    assert [(t.name, t.max_entries) for t in tiers] == [("only", 9)]


def test_env_override_applies_before_validation() -> None:
    """An override can fix an invalid value in the file."""
    text = "sampler: {interval_ms: 1}\n"
    config = parse_config(text, env={"JARVIS_RUNTIME__SAMPLER__INTERVAL_MS": "100"})
    assert config.sampler.interval_ms == 100


def test_variables_without_the_prefix_are_ignored() -> None:
    """Only JARVIS_RUNTIME__ variables are overrides."""
    env = {"JARVIS_SAMPLER__INTERVAL_MS": "x", "PATH": "/bin", "jarvis_runtime__sampler": "x"}
    assert parse_config("", env=env) == Config()


def test_env_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """env=None means os.environ."""
    monkeypatch.setenv("JARVIS_RUNTIME__PROFILER__HEARTBEAT_MS", "42")
    assert load_config().profiler.heartbeat_ms == 42


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JARVIS_RUNTIME__SAMPLR__INTERVAL_MS", "1", "unknown key 'samplr' in the top level; "
         "did you mean 'sampler'?"),
        ("JARVIS_RUNTIME__SAMPLER__INTERVL_MS", "1", "unknown key 'intervl_ms' in $.sampler; "
         "did you mean 'interval_ms'?"),
        ("JARVIS_RUNTIME__CACHE__TIERS__7__NAME", "x", "'7' is not an index of $.cache.tiers "
         "(it has 2 items)"),
        ("JARVIS_RUNTIME__CACHE__TIERS__FIRST__NAME", "x", "'FIRST' is not an index"),
        ("JARVIS_RUNTIME__SAMPLER__INTERVAL_MS__X", "1", "$.sampler.interval_ms is a single "
         "value; it has no key 'x'"),
        ("JARVIS_RUNTIME__SAMPLER____INTERVAL_MS", "1", "empty key in the variable name"),
        ("JARVIS_RUNTIME__", "1", "empty key in the variable name"),
        ("JARVIS_RUNTIME__SAMPLER__INTERVAL_MS", "[1, 2", "is not a YAML value"),
    ],
)  # fmt: skip
def test_bad_env_overrides_are_problems_named_by_the_variable(
    name: str, value: str, message: str
) -> None:
    """A variable naming no key (or unparseable) is a problem whose path is the variable."""
    found = problems_of("", env={name: value})
    assert list(found) == [name]
    assert message in found[name]


def test_env_override_into_a_scalar_in_the_file_is_a_problem() -> None:
    """A variable cannot set a key inside a value the file made a scalar."""
    found = problems_of("sampler: 5\n", env={"JARVIS_RUNTIME__SAMPLER__ENABLED": "true"})
    assert found["JARVIS_RUNTIME__SAMPLER__ENABLED"] == (
        "$.sampler is 5; cannot override a key inside it"
    )


def test_a_bad_override_value_is_reported_at_its_path_naming_the_variable() -> None:
    """A wrong value from the environment says which variable it came from."""
    text = "sampler:\n  interval_ms: 100\n"
    found = problems_of(text, env={"JARVIS_RUNTIME__SAMPLER__INTERVAL_MS": "soon"})
    assert found == {
        "$.sampler.interval_ms": "expected an integer, got 'soon' (string) "
        "(from JARVIS_RUNTIME__SAMPLER__INTERVAL_MS)"
    }


def test_a_whole_value_override_hides_the_file_lines_beneath_it() -> None:
    """After replacing a list, problems inside it point at the variable, not the file."""
    text = "cache:\n  tiers:\n    - {name: a, backend: memory, max_entries: 1}\n"
    found = problems_of(text, env={"JARVIS_RUNTIME__CACHE__TIERS": "[{name: b}]"})
    assert found["$.cache.tiers[0].backend"].endswith("(from JARVIS_RUNTIME__CACHE__TIERS)")


# -- files ------------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """A file on disk is read, validated and named in errors."""
    path = tmp_path / "c.yaml"
    path.write_text("sampler: {interval_ms: 200}\n")
    assert load_config(path, env={}).sampler.interval_ms == 200
    path.write_text("sampler: {interval_ms: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})
    assert caught.value.source == str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.yaml", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write_bytes(d / "latin1.yaml", b"name: caf\xe9\n"), "not UTF-8 text"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, make: Any, message: str) -> None:
    """A missing, unreadable or non-UTF-8 file is one problem at $ naming the file."""
    path = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [problem] = caught.value.problems
    assert problem.path == "$"
    assert str(path) in problem.message and message in problem.message


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
