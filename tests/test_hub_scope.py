"""The hub scope's parts in process: the handler swap on a Tornado app, and what is remembered of tokens.

What the scope admits and refuses on a real hub is in test_fleet.py and
test_hub_credentials.py.
"""

from __future__ import annotations

from tornado.web import Application, RequestHandler

from rucio_metrics.hub_scope import MAX_TOKENS, TokenVerdicts, admit_hub_scope
from rucio_metrics.routes import app_rules, path_pattern


class MetricsHandler(RequestHandler):
    """Stands for jupyter_server's PrometheusMetricsHandler: only its place in the app matters here."""


class OtherHandler(RequestHandler):
    pass


def app() -> Application:
    return Application([(r"/user/alice/metrics", MetricsHandler), (r"/user/alice/api/status", OtherHandler)])


def targets(web_app: Application) -> dict[str | None, type[RequestHandler]]:
    return {path_pattern(rule): rule.target for rule in app_rules(web_app)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_the_metrics_handler_is_replaced_by_a_subclass_of_the_same_name() -> None:
    web_app = app()
    assert admit_hub_scope(web_app, "/user/alice/", "custom:a:read", 300)
    found = targets(web_app)
    scoped = found["/user/alice/metrics"]
    assert scoped is not MetricsHandler and issubclass(scoped, MetricsHandler)
    assert (scoped.__name__, scoped.__module__) == (MetricsHandler.__name__, MetricsHandler.__module__)
    assert found["/user/alice/api/status"] is OtherHandler


def test_no_metrics_handler_at_that_base_url_is_reported() -> None:
    web_app = app()
    assert not admit_hub_scope(web_app, "/user/bob/", "custom:a:read", 300)
    assert targets(web_app)["/user/alice/metrics"] is MetricsHandler


def test_a_second_load_takes_the_latest_scope_and_forgets_what_the_hub_said() -> None:
    web_app = app()
    admit_hub_scope(web_app, "/user/alice/", "custom:a:read", 300)
    scoped = targets(web_app)["/user/alice/metrics"]
    scoped._rucio_metrics_verdicts.put("a-token-of-someone", True, False)
    admit_hub_scope(web_app, "/user/alice/", "custom:b:read", 5)
    again = targets(web_app)["/user/alice/metrics"]
    assert again is scoped  # subclassed once, never a subclass of the subclass
    assert again._rucio_metrics_scope == "custom:b:read"
    assert again._rucio_metrics_verdicts.cache_seconds == 5
    assert again._rucio_metrics_verdicts.get("a-token-of-someone") is None


def test_a_verdict_is_kept_for_the_cache_period_and_not_a_moment_longer() -> None:
    clock = Clock()
    verdicts = TokenVerdicts(60, clock)
    assert verdicts.get("t" * 32) is None
    verdicts.put("t" * 32, True, False)
    clock.now += 59.9
    assert verdicts.get("t" * 32) == (True, False)
    clock.now += 0.1
    assert verdicts.get("t" * 32) is None
    assert verdicts.get("u" * 32) is None


def test_zero_seconds_asks_the_hub_every_time() -> None:
    verdicts = TokenVerdicts(0, Clock())
    verdicts.put("t" * 32, True, False)
    assert verdicts.get("t" * 32) is None


def test_a_flood_of_made_up_tokens_keeps_at_most_the_cap_and_the_newest() -> None:
    clock = Clock()
    verdicts = TokenVerdicts(300, clock)
    verdicts.put("the-scrape-token", True, False)
    for i in range(MAX_TOKENS * 3):
        clock.now += 0.001
        verdicts.put(f"made-up-{i}", False, False)
    assert len(verdicts._verdicts) == MAX_TOKENS
    assert verdicts.get(f"made-up-{MAX_TOKENS * 3 - 1}") == (False, False)
    assert verdicts.get("made-up-0") is None


def test_expired_verdicts_make_room_before_live_ones_are_dropped() -> None:
    clock = Clock()
    verdicts = TokenVerdicts(10, clock)
    verdicts.put("the-scrape-token", True, False)
    clock.now += 1
    for i in range(MAX_TOKENS - 1):
        verdicts.put(f"old-{i}", False, False)
    clock.now += 9.5  # the scrape token is 10.5 s old (expired), the others 9.5 s (alive)
    verdicts.put("new", False, False)
    assert verdicts.get("new") == (False, False)
    assert verdicts.get("old-0") == (False, False)  # alive, kept: the expired entry made the room


def test_tokens_are_kept_by_their_hash_only() -> None:
    verdicts = TokenVerdicts(300, Clock())
    verdicts.put("a-secret-token-value", True, False)
    assert all("a-secret-token-value" not in key for key in verdicts._verdicts)
