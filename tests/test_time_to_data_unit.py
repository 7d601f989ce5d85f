"""Time to data in one process: the waits, their outcomes and bounds, the wrappers, the options, the load.

The waits run on a clock the test moves (``TimeToData.clock``), so the horizon
and the seconds of each wait are exact. The wrapped classes have the shape of
rucio-jupyterlab's mode handlers; the real ones are wrapped by the load tests
(and driven for real by tests/test_time_to_data.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from pytest_jupyter.jupyter_server import *  # noqa: F403  (jp_serverapp and what it needs)
from traitlets.config import Config, Configurable

from rucio_metrics.config import RucioMetrics, load_options
from rucio_metrics.extension import load
from rucio_metrics.time_to_data import (
    ALREADY_AVAILABLE,
    AVAILABLE,
    BUCKETS,
    DOWNLOAD_STARTED,
    DROPPED,
    FAILED,
    MAKE_AVAILABLE,
    REFUSED,
    REPLICA,
    RULE_CREATED,
    RULE_EXISTS,
    SECONDS,
    STUCK,
    UNOBSERVED,
    WAITS,
    TimeToData,
    configured_modes,
    instrument_mode_handler,
    load_time_to_data,
    raised_outcome,
    rule_outcome,
    verdict,
)
from rucio_metrics.transfer_results import FAILED as TRANSFER_FAILED
from rucio_metrics.transfer_results import KILLED, SUCCEEDED, Result
from rucio_metrics.transfers import DOWNLOAD, UPLOAD, TransferMetrics

from .servers.jupyter_server_process import unreachable_rucio_instance
from .support.own_loop import run_on_own_loop

OK, REPLICATING = {"status": "OK"}, {"status": "REPLICATING"}


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Registry:
    """A fresh registry with the families, on the test's clock."""

    def __init__(self, horizon: float = 60.0, max_waits: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.waits = TimeToData.on(self.registry)
        self.waits.configure(horizon, max_waits)
        self.clock = Clock()
        self.waits.clock = self.clock

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def waited(self, outcome: str, instance: str = "atlas", mode: str = REPLICA) -> tuple[float, float]:
        labels = {"rucio_instance": instance, "mode": mode, "outcome": outcome}
        return self.value(SECONDS + "_count", **labels), self.value(SECONDS + "_sum", **labels)

    def waiting(self, instance: str = "atlas", mode: str = REPLICA) -> float:
        return self.value(WAITS, rucio_instance=instance, mode=mode)

    def made(self, outcome: str, instance: str = "atlas", mode: str = REPLICA) -> float:
        return self.value(MAKE_AVAILABLE + "_total", rucio_instance=instance, mode=mode, outcome=outcome)

    def make_available(self, name: str, outcome: str = RULE_CREATED, instance: str = "atlas") -> None:
        self.waits.made_available(instance, REPLICA, "data18", name, outcome, self.clock())

    def look(self, name: str, *files: dict[str, str], instance: str = "atlas") -> None:
        self.waits.looked(instance, "data18", name, list(files))


@pytest.fixture
def r() -> Registry:
    return Registry()


# -- what an answer says ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("files", "expected"), [
    ([OK, OK], AVAILABLE),
    ([OK, REPLICATING], None),
    ([REPLICATING, REPLICATING], None),
    ([OK, {"status": "STUCK"}, {"status": "STUCK"}], STUCK),
    ([{"status": "FETCHING"}], None),
    ([{"status": "NOT_AVAILABLE"}], None),
    ([], None),  # no files: nothing is available yet
    (None, None),  # the call raised
    ({"ExceptionClass": "x"}, None),
    ([OK, "not a dict"], None),
])
def test_verdict_of_an_answer(files: Any, expected: str | None) -> None:
    assert verdict(files) == expected


@pytest.mark.parametrize(("result", "expected"), [
    (["3f2a"], RULE_CREATED),
    ({"ExceptionClass": "DuplicateRule", "ExceptionMessage": "exists"}, RULE_EXISTS),
    ({"ExceptionClass": "DataIdentifierNotFound"}, REFUSED),
    ({"ExceptionClass": "InsufficientAccountLimit"}, REFUSED),
    # The account may not create that rule: Rucio answers its generic 500, a refusal all the same.
    ({"ExceptionClass": "AccessDenied", "ExceptionMessage": "Account alice can not add replication rule"}, REFUSED),
    ({"ExceptionClass": "ReplicationRuleCreationTemporaryFailed"}, FAILED),  # Rucio failing, not the user
    ({"ExceptionClass": "DatabaseException"}, FAILED),
    ({"unexpected": "shape"}, FAILED),
    (None, FAILED),
])
def test_outcome_of_what_make_available_returned(result: object, expected: str) -> None:
    assert rule_outcome(result) == expected


def test_outcome_of_what_make_available_raised() -> None:
    refusal = requests.HTTPError(response=requests.Response())
    assert refusal.response is not None
    refusal.response.status_code = 404
    assert raised_outcome(refusal) == REFUSED
    assert raised_outcome(requests.ConnectionError("refused")) == FAILED
    assert raised_outcome(ValueError("not JSON")) == FAILED


# -- one wait -------------------------------------------------------------------------------------------------


def test_a_wait_counts_once_from_make_available_to_the_first_answer_that_says_available(r: Registry) -> None:
    r.make_available("RAW.dataset")
    for _ in range(5):
        r.clock.advance(2)
        r.look("RAW.dataset", REPLICATING, REPLICATING)
    assert r.waiting() == 1 and r.waited(AVAILABLE) == (0, 0)
    r.clock.advance(3)
    r.look("RAW.dataset", OK, OK)
    assert r.waiting() == 0 and r.waited(AVAILABLE) == (1, 13)
    r.clock.advance(2)
    r.look("RAW.dataset", OK, OK)  # the panel's next poll: no wait any more
    assert r.waited(AVAILABLE) == (1, 13)
    assert r.made(RULE_CREATED) == 1


def test_a_stuck_rule_ends_the_wait_stuck(r: Registry) -> None:
    r.make_available("SIM.dataset")
    r.clock.advance(7)
    r.look("SIM.dataset", OK, {"status": "STUCK"})
    r.look("SIM.dataset", OK, {"status": "STUCK"})
    assert r.waited(STUCK) == (1, 7) and r.waiting() == 0
    assert r.waited(AVAILABLE) == (0, 0)


def test_made_available_again_while_it_waits_is_the_same_wait(r: Registry) -> None:
    r.make_available("SIM.dataset")
    r.clock.advance(5)
    r.make_available("SIM.dataset", RULE_EXISTS)
    assert r.waiting() == 1
    r.clock.advance(5)
    r.look("SIM.dataset", OK)
    assert r.waited(AVAILABLE) == (1, 10)
    assert (r.made(RULE_CREATED), r.made(RULE_EXISTS)) == (1, 1)


def test_made_available_again_keeps_a_later_look_of_a_poll_that_ended_meanwhile(r: Registry) -> None:
    # The second make-available began at 1005 and waited for Rucio; a poll looked at 1010 meanwhile.
    r.make_available("SIM.dataset")
    r.clock.advance(10)
    r.look("SIM.dataset", REPLICATING)
    r.waits.made_available("atlas", REPLICA, "data18", "SIM.dataset", RULE_EXISTS, r.clock() - 5)
    r.clock.advance(56)  # 56 s after the last look (within the 60 s horizon), 61 s after the request began
    r.look("SIM.dataset", OK)
    assert r.waited(AVAILABLE) == (1, 66)
    assert r.waited(UNOBSERVED) == (0, 0)


def test_a_rule_found_starts_a_wait_too(r: Registry) -> None:
    r.make_available("AOD.dataset", RULE_EXISTS)
    r.clock.advance(1)
    r.look("AOD.dataset", OK, OK)
    assert r.waited(AVAILABLE) == (1, 1)


def test_refused_and_failed_make_available_start_no_wait(r: Registry) -> None:
    r.make_available("nope", REFUSED)
    r.make_available("later", FAILED)
    r.look("nope", OK)
    r.look("later", OK)
    assert r.waiting() == 0 and r.waited(AVAILABLE) == (0, 0)
    assert (r.made(REFUSED), r.made(FAILED)) == (1, 1)


def test_a_look_at_a_did_nobody_made_available_counts_nothing(r: Registry) -> None:
    r.look("AOD.dataset", OK, OK)
    r.look("AOD.dataset", REPLICATING)
    assert r.waited(AVAILABLE) == (0, 0) and r.waiting() == 0


def test_waits_are_per_instance(r: Registry) -> None:
    r.make_available("RAW.dataset")
    r.make_available("RAW.dataset", instance="cms")
    r.look("RAW.dataset", OK, instance="cms")
    assert (r.waiting(), r.waiting("cms")) == (1, 0)
    assert r.waited(AVAILABLE, "cms") == (1, 0) and r.waited(AVAILABLE) == (0, 0)


# -- the horizon and the cap ------------------------------------------------------------------------------


def test_a_wait_looked_at_after_the_horizon_ends_unobserved_at_its_last_look() -> None:
    r = Registry(horizon=60)
    r.make_available("RAW.dataset")
    r.clock.advance(30)
    r.look("RAW.dataset", REPLICATING)
    r.clock.advance(61)
    r.look("RAW.dataset", OK)  # too late: the user had left
    assert r.waited(UNOBSERVED) == (1, 30) and r.waited(AVAILABLE) == (0, 0)
    assert r.waiting() == 0


def test_a_wait_looked_at_within_the_horizon_goes_on() -> None:
    r = Registry(horizon=60)
    r.make_available("RAW.dataset")
    for _ in range(4):
        r.clock.advance(59)
        r.look("RAW.dataset", REPLICATING)
    r.waits.expire()
    r.look("RAW.dataset", OK)
    assert r.waited(AVAILABLE) == (1, 236) and r.waited(UNOBSERVED) == (0, 0)


def test_expire_ends_only_the_waits_past_the_horizon() -> None:
    r = Registry(horizon=60)
    r.make_available("old")
    r.clock.advance(40)
    r.make_available("new")
    r.clock.advance(30)
    r.waits.expire()
    assert r.waited(UNOBSERVED) == (1, 0) and r.waiting() == 1
    r.clock.advance(31)
    r.waits.expire()
    assert r.waited(UNOBSERVED) == (2, 0) and r.waiting() == 0


def test_at_the_cap_waits_past_the_horizon_end_unobserved_before_any_is_dropped() -> None:
    r = Registry(horizon=60, max_waits=2)
    r.make_available("old")
    r.clock.advance(30)
    r.make_available("recent")
    r.clock.advance(32)  # old was last looked at 62 s ago, recent 32 s ago
    r.make_available("new")
    assert r.waited(UNOBSERVED) == (1, 0) and r.value(DROPPED + "_total") == 0
    assert r.waiting() == 2 and r.waits.open_waits == 2


def test_over_the_cap_the_wait_looked_at_least_recently_is_dropped_and_counted() -> None:
    r = Registry(max_waits=3)
    for name in ("a", "b", "c"):
        r.make_available(name)
        r.clock.advance(1)
    r.look("a", REPLICATING)  # a is looked at again: b is now the least recently looked at
    r.make_available("d")
    assert r.waits.open_waits == 3 and r.waiting() == 3
    assert r.value(DROPPED + "_total") == 1
    r.look("b", OK)  # dropped: no longer a wait
    assert r.waited(AVAILABLE) == (0, 0)
    for name in ("a", "c", "d"):
        r.look(name, OK)
    assert r.waited(AVAILABLE)[0] == 3 and r.waiting() == 0


def test_ten_thousand_and_one_waits_keep_ten_thousand() -> None:
    r = Registry(max_waits=10_000)
    for i in range(10_001):
        r.make_available(f"file{i}.root")
    assert r.waits.open_waits == 10_000 and r.waiting() == 10_000
    assert r.value(DROPPED + "_total") == 1


def test_the_ioloop_expires_waits_without_traffic() -> None:
    r = Registry(horizon=1)
    assert r.waits.sweep_ms() == 1000

    async def a_wait_nobody_looks_at() -> None:
        r.make_available("RAW.dataset")  # on the loop, as the make-available route calls it
        r.clock.advance(2)
        while r.waiting():
            await asyncio.sleep(0.05)

    run_on_own_loop(a_wait_nobody_looks_at, timeout=5)
    assert r.waited(UNOBSERVED) == (1, 0)


def test_the_sweep_period_follows_the_horizon() -> None:
    r = Registry(horizon=3600)
    assert r.waits.sweep_ms() == 60_000
    r.waits.configure(20, 100)
    assert r.waits.sweep_ms() == 5000


# -- download mode -----------------------------------------------------------------------------------------


def test_a_download_is_download_modes_wait() -> None:
    r = Registry()
    transfers = TransferMetrics.on(r.registry)
    transfers.observers.append(r.waits)
    transfers.start("cms", "download")
    assert r.waiting("cms", DOWNLOAD) == 1
    transfers.end("cms", "download", Result(SUCCEEDED, bytes=10), 12.5)
    transfers.start("cms", "download")
    transfers.end("cms", "download", Result(TRANSFER_FAILED, "NoFilesDownloaded"), 3.0)
    transfers.start("cms", "download")
    transfers.end("cms", "download", Result(KILLED), 1.0)
    # Rucio refused what the user asked for: their wait ended, but no objective judges it.
    transfers.start("cms", "download")
    transfers.end("cms", "download", Result(TRANSFER_FAILED, "DataIdentifierNotFound"), 2.0)
    transfers.start("cms", UPLOAD)  # an upload is nobody's wait for data
    transfers.end("cms", UPLOAD, Result(SUCCEEDED), 1.0)
    assert r.waited(AVAILABLE, "cms", DOWNLOAD) == (1, 12.5)
    assert r.waited(FAILED, "cms", DOWNLOAD) == (2, 4.0)
    assert r.waited(REFUSED, "cms", DOWNLOAD) == (1, 2.0)
    assert r.waiting("cms", DOWNLOAD) == 0
    assert r.registry.get_sample_value(WAITS, {"rucio_instance": "cms", "mode": UPLOAD}) is None


def test_a_download_started_before_the_families_observed_ends_without_a_negative_gauge() -> None:
    r = Registry()
    transfers = TransferMetrics.on(r.registry)
    transfers.start("cms", "download")  # before a later load turned time to data on
    transfers.observers.append(r.waits)
    transfers.end("cms", "download", Result(SUCCEEDED, bytes=10), 2.0)
    assert r.waiting("cms", DOWNLOAD) == 0
    assert r.waited(AVAILABLE, "cms", DOWNLOAD) == (1, 2.0)


class DownloadModeHandler:
    """The shape of rucio-jupyterlab's: make_available starts a download (or not) and returns None."""

    transfers: TransferMetrics | None = None

    def __init__(self, namespace: str, downloads: bool = True, error: BaseException | None = None) -> None:
        self.namespace = namespace
        self.downloads = downloads
        self.error = error

    def make_available(self, scope: str, name: str) -> None:
        if self.downloads and self.transfers is not None:
            self.transfers.start(self.namespace, "download")  # what the transfer watcher does at Process()
        if self.error is not None:
            raise self.error


def test_download_make_available_says_whether_it_started_a_download() -> None:
    r = Registry()
    transfers = TransferMetrics.on(r.registry)
    transfers.observers.append(r.waits)
    handler_class = type("DownloadModeHandler", (DownloadModeHandler,), {"transfers": transfers})
    assert instrument_mode_handler(handler_class, DOWNLOAD, r.waits) == (["make_available"], [])
    assert handler_class("cms").make_available("user.alice", "a.root") is None
    assert handler_class("cms", downloads=False).make_available("user.alice", "a.root") is None
    with pytest.raises(OSError):
        handler_class("cms", downloads=False, error=OSError("disk full")).make_available("user.alice", "b.root")
    with pytest.raises(OSError):  # the download started before the error: a wait all the same
        handler_class("cms", error=OSError("late")).make_available("user.alice", "c.root")
    assert (r.made(DOWNLOAD_STARTED, "cms", DOWNLOAD), r.made(ALREADY_AVAILABLE, "cms", DOWNLOAD),
            r.made(FAILED, "cms", DOWNLOAD)) == (2, 1, 1)
    # Already there: a wait of 0 s, available; the downloads' waits end with the downloads.
    assert r.waited(AVAILABLE, "cms", DOWNLOAD) == (1, 0) and r.waiting("cms", DOWNLOAD) == 2


# -- the wrappers -----------------------------------------------------------------------------------------


class ReplicaModeHandler:
    """The shape of rucio-jupyterlab's: Rucio's answer from make_available, the files' statuses from the other."""

    def __init__(self, namespace: str, answer: Any = None, files: Any = None) -> None:
        self.namespace = namespace
        self.answer = answer
        self.files = files

    def make_available(self, scope: str, name: str) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def get_did_details(self, scope: str, name: str, force_fetch: bool = False) -> Any:
        if isinstance(self.files, BaseException):
            raise self.files
        return self.files


def replica_class() -> type[ReplicaModeHandler]:
    return type("ReplicaModeHandler", (ReplicaModeHandler,), {
        "make_available": ReplicaModeHandler.make_available, "get_did_details": ReplicaModeHandler.get_did_details,
    })


def test_wrapped_replica_handler_returns_and_raises_what_it_did(r: Registry) -> None:
    handler_class = replica_class()
    assert instrument_mode_handler(handler_class, REPLICA, r.waits) == (["make_available", "get_did_details"], [])
    assert handler_class("atlas", ["rule-id"]).make_available("data18", "RAW.dataset") == ["rule-id"]
    assert handler_class("atlas", files=[REPLICATING]).get_did_details("data18", "RAW.dataset", True) == [REPLICATING]
    error = requests.ConnectionError("Rucio is gone")
    with pytest.raises(requests.ConnectionError) as raised:
        handler_class("atlas", error).make_available("data18", "SIM.dataset")
    assert raised.value is error
    with pytest.raises(requests.ConnectionError):
        handler_class("atlas", files=error).get_did_details("data18", "RAW.dataset")
    assert r.waiting() == 1 and (r.made(RULE_CREATED), r.made(FAILED)) == (1, 1)
    r.clock.advance(4)
    handler_class("atlas", files=[OK]).get_did_details(scope="data18", name="RAW.dataset")
    assert r.waited(AVAILABLE) == (1, 4)


def test_a_look_that_raised_still_counts_as_a_look() -> None:
    r = Registry(horizon=60)
    handler_class = replica_class()
    instrument_mode_handler(handler_class, REPLICA, r.waits)
    handler_class("atlas", ["rule-id"]).make_available("data18", "RAW.dataset")
    r.clock.advance(50)
    with pytest.raises(RuntimeError):
        handler_class("atlas", files=RuntimeError("Rucio down")).get_did_details("data18", "RAW.dataset")
    r.clock.advance(50)
    handler_class("atlas", files=[OK]).get_did_details("data18", "RAW.dataset")
    assert r.waited(AVAILABLE) == (1, 100)


def test_wrapping_twice_wraps_once_and_records_into_the_latest_families() -> None:
    first, second = Registry(), Registry()
    handler_class = replica_class()
    instrument_mode_handler(handler_class, REPLICA, first.waits)
    assert instrument_mode_handler(handler_class, REPLICA, second.waits) == ([], [])
    handler_class("atlas", ["rule-id"]).make_available("data18", "RAW.dataset")
    assert (first.made(RULE_CREATED), second.made(RULE_CREATED)) == (0, 1)


def test_a_class_without_one_of_the_methods_is_not_wrapped_at_all(r: Registry) -> None:
    class Changed:
        def make_available(self, scope: str, name: str) -> list[str]:
            return ["rule-id"]

        get_did_details = property(lambda self: None)

    assert instrument_mode_handler(Changed, REPLICA, r.waits) == ([], ["get_did_details"])
    assert "_rucio_metrics_time_to_data" not in vars(Changed.make_available)


def test_a_recording_failure_never_changes_the_answer(r: Registry, caplog: pytest.LogCaptureFixture) -> None:
    handler_class = replica_class()
    instrument_mode_handler(handler_class, REPLICA, r.waits)
    handler_class("atlas", ["rule-id"]).make_available("data18", "RAW.dataset")
    handler = handler_class("atlas", files=[OK])
    del handler.namespace  # nothing to label the look with
    with caplog.at_level(logging.ERROR, "rucio_metrics"):
        assert handler.get_did_details("data18", "RAW.dataset") == [OK]
        assert handler.get_did_details("data18", "RAW.dataset") == [OK]
    assert [rec.getMessage() for rec in caplog.records] == [
        "rucio_metrics: recording a look at a DID failed; requests are served as usual (logged once)"]


# -- series, options and the load ---------------------------------------------------------------------------


def test_precreated_series_and_their_buckets() -> None:
    r = Registry()
    r.waits.precreate([("atlas", REPLICA), ("cms", DOWNLOAD)])
    families = {family.name: family for family in r.registry.collect()}
    assert set(families) == {SECONDS, WAITS, MAKE_AVAILABLE, DROPPED}
    assert families[SECONDS].type == "histogram"
    les = [s.labels["le"] for s in families[SECONDS].samples
           if s.name == SECONDS + "_bucket" and s.labels["rucio_instance"] == "atlas"
           and s.labels["outcome"] == AVAILABLE]
    assert les == [*(str(b) for b in BUCKETS), "+Inf"] and "1800.0" in les
    assert {(s.labels["rucio_instance"], s.labels["mode"], s.labels["outcome"])
            for s in families[SECONDS].samples} == {
        # What the objective and the stuck alert judge, at zero: rate() sees their first wait.
        ("atlas", REPLICA, AVAILABLE), ("atlas", REPLICA, STUCK),
        ("cms", DOWNLOAD, AVAILABLE), ("cms", DOWNLOAD, FAILED),
    }
    assert {(s.labels["rucio_instance"], s.labels["mode"]) for s in families[WAITS].samples} == \
        {("atlas", REPLICA), ("cms", DOWNLOAD)}
    assert not [s for s in families[MAKE_AVAILABLE].samples]
    assert TimeToData.on(r.registry) is r.waits  # once per registry


def test_configured_modes() -> None:
    config = {"RucioConfig": {"instances": [{"name": "atlas"}, {"name": "cms", "mode": "download"},
                                            {"name": "odd", "mode": "telepathy"}, {"mode": "download"}]}}
    assert configured_modes(config) == [("atlas", REPLICA), ("cms", DOWNLOAD), ("odd", REPLICA)]
    assert configured_modes({}) == [] and configured_modes({"RucioConfig": {"instances": "x"}}) == []


def options_from(caplog: pytest.LogCaptureFixture, **values: object) -> RucioMetrics:
    with caplog.at_level(logging.ERROR):
        return load_options(Configurable(config=Config({"RucioMetrics": values})), logging.getLogger("test"))


def test_option_defaults(caplog: pytest.LogCaptureFixture) -> None:
    options = options_from(caplog)
    assert (options.time_to_data_enabled, options.time_to_data_horizon_seconds, options.time_to_data_max_waits) \
        == (True, 3600.0, 10_000)
    assert caplog.records == []


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("time_to_data_horizon_seconds", 0.5, "less than 1.0"),
    ("time_to_data_horizon_seconds", float("nan"), "finite"),
    ("time_to_data_horizon_seconds", float("inf"), "finite"),
    ("time_to_data_horizon_seconds", "an hour", "expected a float"),
    ("time_to_data_max_waits", 0, "less than 1"),
    ("time_to_data_max_waits", "many", "expected an int"),
    ("time_to_data_enabled", "perhaps", "time_to_data_enabled"),
])
def test_a_bad_option_keeps_its_default(caplog: pytest.LogCaptureFixture, name: str, value: object,
                                        reason: str) -> None:
    options = options_from(caplog, **{name: value})
    assert getattr(options, name) == RucioMetrics.class_traits()[name].default()
    [message] = [rec.getMessage() for rec in caplog.records]
    assert f"RucioMetrics.{name} = {value!r}" in message and reason in message


def test_load_wraps_the_real_handlers_and_precreates_the_configured_instances(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import rucio_jupyterlab  # noqa: F401  (loaded, as in a server that enabled it)
    from rucio_jupyterlab.mode_handlers.download import DownloadModeHandler
    from rucio_jupyterlab.mode_handlers.replica import ReplicaModeHandler

    registry = CollectorRegistry()
    transfers = TransferMetrics.on(registry)
    config = {"RucioConfig": {"instances": [{"name": "atlas"}, {"name": "cms", "mode": "download"}]}}
    with caplog.at_level(logging.INFO):
        waits = load_time_to_data(registry, 120.0, 50, transfers, config, logging.getLogger("test"))
        again = load_time_to_data(registry, 60.0, 50, transfers, config, logging.getLogger("test"))
    assert waits is not None and again is waits and waits.horizon == 60.0
    assert transfers.observers == [waits]
    for method in (ReplicaModeHandler.make_available, ReplicaModeHandler.get_did_details,
                   DownloadModeHandler.make_available):
        assert getattr(method, "_rucio_metrics_time_to_data", False), method
    assert registry.get_sample_value(SECONDS + "_count",
                                     {"rucio_instance": "cms", "mode": DOWNLOAD, "outcome": AVAILABLE}) == 0
    assert registry.get_sample_value(WAITS, {"rucio_instance": "atlas", "mode": REPLICA}) == 0
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING] == []


def test_without_watched_downloads_download_mode_is_not_measured(caplog: pytest.LogCaptureFixture) -> None:
    import rucio_jupyterlab  # noqa: F401

    registry = CollectorRegistry()
    config = {"RucioConfig": {"instances": [{"name": "atlas"}, {"name": "cms", "mode": "download"}]}}
    with caplog.at_level(logging.INFO):
        assert load_time_to_data(registry, 60.0, 50, None, config, logging.getLogger("test")) is not None
    assert registry.get_sample_value(WAITS, {"rucio_instance": "cms", "mode": DOWNLOAD}) is None
    assert registry.get_sample_value(WAITS, {"rucio_instance": "atlas", "mode": REPLICA}) == 0
    assert "time to data in download mode is not measured" in caplog.text


@pytest.fixture
def jp_server_config() -> Config:
    return Config({
        "ServerApp": {"jpserver_extensions": {"rucio_jupyterlab.server": True, "rucio_metrics": True}},
        "RucioConfig": {"instances": [unreachable_rucio_instance("atlas")]},
    })


@pytest.mark.parametrize("enabled", [True, False])
def test_the_extension_loads_it_unless_turned_off(jp_serverapp: Any, enabled: bool) -> None:
    jp_serverapp.config.RucioMetrics.time_to_data_enabled = enabled
    registry = CollectorRegistry()
    try:
        load(jp_serverapp, registry)
    finally:
        del jp_serverapp.config.RucioMetrics["time_to_data_enabled"]
    waiting = registry.get_sample_value(WAITS, {"rucio_instance": "atlas", "mode": REPLICA})
    assert waiting == (0.0 if enabled else None)


def test_turning_it_off_in_a_second_load_is_warned_about(jp_serverapp: Any, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    load(jp_serverapp, registry)
    jp_serverapp.config.RucioMetrics.time_to_data_enabled = False
    try:
        with caplog.at_level(logging.WARNING):
            load(jp_serverapp, registry)
    finally:
        del jp_serverapp.config.RucioMetrics["time_to_data_enabled"]
    assert "RucioMetrics.time_to_data_enabled = False is ignored: waits for data are already measured" in caplog.text
