"""RucioMetrics options: defaults, validation, and bad values that fall back to defaults."""

from __future__ import annotations

import logging

import pytest
from traitlets.config import Config, Configurable
from traitlets.config.loader import DeferredConfigString

from rucio_metrics.config import DEFAULT_BUCKETS, RucioMetrics, load_options


def options_from(caplog: pytest.LogCaptureFixture, **values: object) -> RucioMetrics:
    parent = Configurable(config=Config({"RucioMetrics": values}))
    with caplog.at_level(logging.ERROR):
        return load_options(parent, logging.getLogger("test"))


def test_defaults(caplog):
    options = options_from(caplog)
    assert options.enabled is True
    assert options.route_prefixes == ["rucio-jupyterlab"]
    assert options.latency_metric == "summary"
    assert options.buckets == list(DEFAULT_BUCKETS)
    assert options.outbound_enabled is True
    assert options.hub_metrics_scope == "custom:rucio-metrics:read:metrics"
    assert options.hub_token_cache_seconds == 300
    assert (options.metrics_port, options.metrics_ip, options.metrics_token_file) == (0, "127.0.0.1", "")
    assert caplog.records == []


def test_valid_values_are_taken(caplog):
    options = options_from(caplog, latency_metric="HISTOGRAM", buckets=[0.5, 1, 10, float("inf")],
                           route_prefixes=["/rucio-jupyterlab/", "other-ext"], enabled=False)
    assert options.latency_metric == "histogram"
    assert options.buckets == [0.5, 1.0, 10.0]
    assert options.route_prefixes == ["rucio-jupyterlab", "other-ext"]
    assert options.enabled is False
    assert caplog.records == []


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("latency_metric", "quantiles", "expected any of"),
    ("buckets", [3, 1], "strictly increasing"),
    ("buckets", [], "at least one bucket"),
    ("buckets", [1, 1], "strictly increasing"),
    ("buckets", [-1, 1], "positive"),
    ("buckets", ["fast"], "must be numbers"),
    ("buckets", [float("inf"), float("inf")], "strictly increasing"),
    ("buckets", [float("inf")], "at least one finite bucket"),
    ("buckets", [1, float("nan")], "not NaN"),
    ("buckets", [0, 1], "positive"),
    ("buckets", [1, 2**2000], "a float can hold"),
    ("buckets", 5, "expected a list"),
    ("route_prefixes", ["rucio.*"], "regex character"),
    ("route_prefixes", ["my.ext"], "regex character"),  # "." alone: a dot in a regex matches any character
    ("route_prefixes", ["a+b"], "regex character"),
    ("route_prefixes", ["/"], "may not be empty"),
    ("route_prefixes", [], "at least one prefix"),
    ("enabled", "perhaps", "enabled"),
    ("metrics_port", 70000, "greater than 65535"),
    ("metrics_port", -1, "less than 0"),
    ("metrics_port", "9101x", "expected an int"),
    ("hub_metrics_scope", "read:metrics", "not a JupyterHub custom scope"),
    ("hub_metrics_scope", "access:servers", "not a JupyterHub custom scope"),
    ("hub_metrics_scope", "custom:Rucio", "not a JupyterHub custom scope"),
    ("hub_metrics_scope", "custom:a", "not a JupyterHub custom scope"),
    ("hub_token_cache_seconds", -1, "less than 0"),
    ("hub_token_cache_seconds", float("nan"), "finite"),
    ("hub_token_cache_seconds", float("inf"), "finite"),
    ("hub_token_cache_seconds", "soon", "expected a float"),
])
def test_a_bad_value_is_logged_with_option_and_value_and_the_default_kept(caplog, name, value, reason):
    values = {"latency_metric": "histogram", name: value}
    options = options_from(caplog, **values)
    default = RucioMetrics.class_traits()[name].default()
    assert getattr(options, name) == default
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 1, messages
    assert f"RucioMetrics.{name} = {value!r}" in messages[0]
    assert reason in messages[0]
    if name != "latency_metric":
        assert options.latency_metric == "histogram"  # the good options still apply


@pytest.mark.parametrize("scope", ["", "custom:rucio-metrics:read:metrics", "custom:monitoring:read", "custom:a1b"])
def test_custom_scopes_and_none_are_taken(caplog, scope):
    assert options_from(caplog, hub_metrics_scope=scope).hub_metrics_scope == scope
    assert caplog.records == []


def test_a_bad_token_file_option_never_shows_its_value(caplog):
    # A token may be pasted where the path belongs; traitlets' own message would quote it.
    options_from(caplog, metrics_token_file=["0f" * 32])
    [message] = [r.getMessage() for r in caplog.records]
    assert "0f0f" not in message
    assert message.startswith("rucio_metrics: invalid option RucioMetrics.metrics_token_file = <not shown>: "
                              "expected a unicode string")


def test_command_line_values(caplog):
    options = options_from(caplog, enabled=DeferredConfigString("False"),
                           latency_metric=DeferredConfigString("bogus"))
    assert options.enabled is False
    assert options.latency_metric == "summary"
    assert "RucioMetrics.latency_metric = 'bogus'" in caplog.records[0].getMessage()


def test_every_option_has_help_with_default_and_example():
    for name, trait in RucioMetrics.class_traits(config=True).items():
        assert "Default:" in trait.help, name
        assert "Example:" in trait.help, name


def test_options_are_children_of_the_server_config(caplog):
    parent = Configurable(config=Config({"RucioMetrics": {"enabled": False}}))
    options = load_options(parent, logging.getLogger("test"))
    assert options.parent is parent
