"""The shipped recording rules give the answers the rules before them gave, but where meant to differ.

The rules were rewritten so that each raw family is read once per evaluation
(``tests/data/rules-before`` keeps the earlier ones, which the fleet benchmark
also runs). Both sets are loaded into one ``promtool test rules`` run, the
earlier set's names prefixed with ``before_``, over the same input series: the
unit tests' inputs, and a generated fleet with every family, counter resets,
series that appear late and precreated series that never move. At many
instants, every series an earlier rule records has its twin, to 1e-9
relative, and no twin exists without it.

Two differences are by design:

- a mean over nothing is ``NaN`` in the earlier rules (0/0 from a precreated
  ``_count``) and absent in the shipped ones, which divide by the request
  rate; a ``NaN`` before may be absent now;
- issue 27 (users' mistakes never page) changed what three error ratios count
  (``INTENDED``). The earlier rules are compared with those three changes
  made to them, and without them the comparison fails for those three and no
  other.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support.deploy_files import PROMETHEUS_DIR, load_yaml, promtool

BEFORE = Path(__file__).resolve().parent / "data" / "rules-before" / "rucio-jupyterlab-recording.yml"
SHIPPED = PROMETHEUS_DIR / "rules" / "rucio-jupyterlab-recording.yml"
RULES_TEST = PROMETHEUS_DIR / "tests" / "rucio-jupyterlab-rules-test.yml"
PREFIX = "before_"

_BY_TRANSFER = "sum by (job, rucio_instance, direction)"

# Issue 27's changes of meaning, as edits of the earlier rules: {record: (why, [(before, now), ...])}.
INTENDED: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "job_handler:rucio_jupyterlab_http_request_errors:ratio_rate5m": (
        "the service's failures (fault=service), not every 5xx: a 500 Rucio's refusal caused is the user's; "
        "divided by the requests as the duration counts them, which sees a status' first request",
        [('rucio_jupyterlab_http_requests_total{status_code=~"5.."}',
          'rucio_jupyterlab_http_request_failures_total{fault="service"}'),
         ("rate(rucio_jupyterlab_http_requests_total[5m])",
          "rate(rucio_jupyterlab_http_request_duration_seconds_count[5m])")],
    ),
    "job_rucio_instance_operation:rucio_jupyterlab_rucio_request_errors:ratio_rate5m": (
        "the service's outcomes (5xx, timeout, connection_error, error), not any but 2xx: a 4xx is Rucio "
        "refusing what the user asked for, invalid_input the user's input refused before any request left",
        [('{outcome!="2xx"}', '{outcome=~"5xx|timeout|connection_error|error"}')],
    ),
    "job_rucio_instance_direction:rucio_jupyterlab_transfer_failures:ratio_rate1h": (
        "killed, or failed for a reason that is not the user's (rucio_jupyterlab_transfer_failures_by_fault_total"
        "{fault=\"service\"}), not every failure",
        [(f'{_BY_TRANSFER} (rate(rucio_jupyterlab_transfers_ended_total{{outcome!="succeeded"}}[1h]))',
          f'(({_BY_TRANSFER} (rate(rucio_jupyterlab_transfers_ended_total{{outcome="killed"}}[1h]))'
          f' or {_BY_TRANSFER} (rate(rucio_jupyterlab_transfers_ended_total[1h])) * 0)'
          f' + ({_BY_TRANSFER} (rate(rucio_jupyterlab_transfer_failures_by_fault_total{{fault="service"}}[1h]))'
          f' or {_BY_TRANSFER} (rate(rucio_jupyterlab_transfers_ended_total[1h])) * 0))')],
    ),
}


def before_names() -> list[str]:
    return [rule["record"] for group in load_yaml(BEFORE)["groups"] for rule in group["rules"] if "record" in rule]


def renamed_before(tmp: Path, intended: bool = True) -> Path:
    """The earlier rules with their records renamed, and with issue 27's ``INTENDED`` changes unless not.

    They read only raw series, so nothing else changes.
    """
    rules = load_yaml(BEFORE)
    for group in rules["groups"]:
        group["name"] = PREFIX + group["name"]
        for rule in group["rules"]:
            for before, now in INTENDED.get(rule["record"], ("", []))[1] if intended else []:
                assert before in rule["expr"], (rule["record"], before)
                rule["expr"] = rule["expr"].replace(before, now)
            rule["record"] = PREFIX + rule["record"]
    path = tmp / "before.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def differences(name: str) -> str:
    """What only one side records, or records differently; empty when the two agree."""
    new, old = name, PREFIX + name
    return (
        f"({new} unless {old})"
        f" or (({old} == {old}) unless {new})"  # a NaN before may be absent now
        f" or (abs({new} - {old}) > 1e-9 * abs({old}))"
        f" or (({new} != {new}) and ({old} == {old}))"
    )


# -- a generated fleet ----------------------------------------------------------------------------------

HANDLERS = ["/rucio-jupyterlab/files", "/rucio-jupyterlab/did", "/rucio-jupyterlab/instances"]
STATUSES = ["200", "400", "500", "503"]
OPERATIONS = ["get_scopes", "search_did", "list_replicas"]
OUTCOMES = ["2xx", "4xx", "5xx", "connection_error"]
MINUTES = 150


def _counter(rng: random.Random, start: int, reset: int | None, slope: float) -> str:
    """A counter's values, one a minute: absent before ``start``, back to 0 at ``reset``."""
    values, value = [], 0.0
    for minute in range(MINUTES + 1):
        if minute < start:
            values.append("_")
            continue
        if minute == reset:
            value = 0.0
        values.append(f"{value:g}")
        value += round(slope * rng.uniform(0.5, 1.5))
    return " ".join(values)


def generated_fleet() -> list[dict[str, str]]:
    """Four servers of two hubs, each family with its own traffic; the duration counts equal the requests."""
    rng = random.Random(20261201)
    series: list[dict[str, str]] = []

    def add(name: str, labels: dict[str, str], values: str) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series.append({"series": f"{name}{{{text}}}", "values": values})

    for number, (job, instance) in enumerate([("hub", "alice"), ("hub", "bob"), ("hub", "carol"), ("other", "dave")]):
        start, reset = rng.choice([0, 0, 20]), rng.choice([None, 90])
        base = {"job": job, "instance": instance}
        for handler in HANDLERS:
            counts: list[list[float]] = []
            for status in STATUSES:
                slope = rng.choice([0, 3, 30]) if status != "200" else rng.choice([60, 120])
                values = _counter(rng, start, reset, slope)
                add("rucio_jupyterlab_http_requests_total",
                    {**base, "handler": handler, "method": "GET", "status_code": status}, values)
                counts.append([float("nan") if v == "_" else float(v) for v in values.split()])
            count = [sum(c[m] for c in counts) for m in range(MINUTES + 1)]
            # The 503s are the service's failures, the 400s and 500s the user's (a refusal upstream answers
            # with a 500); the service's series exists at 0 from the start.
            by_status = dict(zip(STATUSES, counts))
            for fault, statuses in (("service", ["503"]), ("user", ["400", "500"])):
                add("rucio_jupyterlab_http_request_failures_total",
                    {**base, "handler": handler, "method": "GET", "fault": fault},
                    _values([sum(by_status[s][m] for s in statuses) for m in range(MINUTES + 1)]))
            seconds = rng.uniform(0.01, 2)
            labels = {**base, "handler": handler, "method": "GET"}
            add("rucio_jupyterlab_http_request_duration_seconds_count", labels, _values(count))
            add("rucio_jupyterlab_http_request_duration_seconds_sum", labels, _values([c * seconds for c in count]))
            if number == 0:  # a server with the histogram: buckets for the p95
                for le, share in (("0.1", 0.3), ("1", 0.9), ("+Inf", 1.0)):
                    add("rucio_jupyterlab_http_request_duration_seconds_bucket", {**labels, "le": le},
                        _values([c * share for c in count]))
        add("rucio_jupyterlab_http_exceptions_total",
            {**base, "handler": HANDLERS[0], "method": "GET", "exception": "ConnectionError"},
            _counter(rng, start, reset, 2))
        for rucio_instance in ("atlas", "cms"):
            for operation in OPERATIONS:
                labels = {**base, "rucio_instance": rucio_instance, "operation": operation}
                if operation == "list_replicas":
                    # Precreated and never called: a duration at zero and no requests series.
                    add("rucio_jupyterlab_rucio_request_duration_seconds_count", labels, f"0x{MINUTES}")
                    add("rucio_jupyterlab_rucio_request_duration_seconds_sum", labels, f"0x{MINUTES}")
                    continue
                counts = []
                for outcome in OUTCOMES:
                    values = _counter(rng, start, reset, rng.choice([0, 5, 40]) if outcome != "2xx" else 90)
                    add("rucio_jupyterlab_rucio_requests_total", {**labels, "outcome": outcome}, values)
                    counts.append([float("nan") if v == "_" else float(v) for v in values.split()])
                count = [sum(c[m] for c in counts) for m in range(MINUTES + 1)]
                add("rucio_jupyterlab_rucio_request_duration_seconds_count", labels, _values(count))
                add("rucio_jupyterlab_rucio_request_duration_seconds_sum", labels,
                    _values([c * rng.uniform(0.05, 1) for c in count]))
            for direction in ("download", "upload"):
                labels = {**base, "rucio_instance": rucio_instance, "direction": direction}
                ended = {}
                # Failed: for the service's reasons and for the user's.
                reasons = {reason: _counter(rng, start, reset, rng.choice([0, 0.2, 1]))
                           for reason in ("NoFilesDownloaded", "InsufficientAccountLimit")}
                for reason, values in reasons.items():
                    add("rucio_jupyterlab_transfer_failures_total", {**labels, "reason": reason}, values)
                for outcome in ("succeeded", "failed", "killed"):
                    if outcome == "failed":
                        ended[outcome] = " ".join(
                            v if v == "_" else f"{float(v) + float(w):g}"
                            for v, w in zip(*(r.split() for r in reasons.values())))
                    else:
                        ended[outcome] = _counter(rng, start, reset, rng.choice([0, 0.2, 1]))
                    add("rucio_jupyterlab_transfers_ended_total", {**labels, "outcome": outcome}, ended[outcome])
                    if ended[outcome].split()[-1] != "0":
                        took = rng.uniform(5, 300)
                        add("rucio_jupyterlab_transfer_duration_seconds_count", {**labels, "outcome": outcome},
                            ended[outcome])
                        add("rucio_jupyterlab_transfer_duration_seconds_sum", {**labels, "outcome": outcome},
                            " ".join(v if v == "_" else f"{float(v) * took:g}" for v in ended[outcome].split()))
                add("rucio_jupyterlab_transfer_bytes_total", labels, _counter(rng, start, reset, 5e6))
                add("rucio_jupyterlab_transfers_in_progress", labels,
                    " ".join(str(rng.randint(0, 3)) for _ in range(MINUTES + 1)))
    return series


def _values(numbers: list[float]) -> str:
    return " ".join("_" if n != n else f"{n:g}" for n in numbers)


# -- the comparison ---------------------------------------------------------------------------------------


def comparison_case(name: str, inputs: list[dict[str, str]], eval_times: list[str],
                    present: bool) -> dict[str, Any]:
    """One promtool test: at each time, no differences; with ``present``, every earlier rule has an answer."""
    tests = [{"expr": differences(record), "eval_time": at, "exp_samples": []}
             for record in before_names() for at in eval_times]
    if present:
        tests += [{"expr": f"clamp_max(count({PREFIX}{record} == {PREFIX}{record}), 1)", "eval_time": eval_times[-1],
                   "exp_samples": [{"labels": "{}", "value": 1}]} for record in before_names()]
    return {"name": name, "interval": "1m", "input_series": inputs, "promql_expr_test": tests}


def unit_test_cases() -> list[dict[str, Any]]:
    """The recording rules' unit tests' inputs, at ten instants of each one's span."""
    cases = []
    for case in load_yaml(RULES_TEST)["tests"]:
        last = max(_minutes(t["eval_time"]) for t in case.get("promql_expr_test", []) + case.get("alert_rule_test", []))
        times = sorted({f"{max(1, last * k // 10)}m" for k in range(1, 11)}, key=_minutes)
        cases.append(comparison_case(f"{RULES_TEST.name}: {case['name']}", case["input_series"], times, False))
    return cases


def _minutes(duration: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mhd])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"m": 1, "h": 60, "d": 1440}[unit]


def promtool_comparison(tmp_path: Path, cases: list[dict[str, Any]], shipped: Path = SHIPPED,
                        intended: bool = True) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "equivalence-test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(shipped), str(renamed_before(tmp_path, intended))],
        "evaluation_interval": "1m",
        "tests": cases,
    }, sort_keys=False))
    return promtool("test", "rules", str(test_file))


def run_promtool(tmp_path: Path, cases: list[dict[str, Any]]) -> str:
    result = promtool_comparison(tmp_path, cases)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def differing_records(output: str) -> set[str]:
    """The records whose comparison failed, from promtool's output."""
    return set(re.findall(r'expr: "\(([\w:]+) unless ', output))


def test_the_shipped_rules_answer_as_the_rules_before_on_the_unit_tests_inputs(tmp_path: Path) -> None:
    assert "SUCCESS" in run_promtool(tmp_path, unit_test_cases())


def test_the_shipped_rules_answer_as_the_rules_before_on_a_generated_fleet(tmp_path: Path) -> None:
    times = [f"{m}m" for m in range(3, MINUTES + 1, 7)]
    assert "SUCCESS" in run_promtool(tmp_path, [comparison_case("generated fleet", generated_fleet(), times, True)])


def test_issue_27_changed_the_meaning_of_the_three_error_ratios_only(tmp_path: Path) -> None:
    # Against the earlier rules as they were, the comparison fails for INTENDED's records and no other:
    # the generated fleet has 500s of the user's, 4xx calls and transfers failed for the user's reasons.
    times = [f"{m}m" for m in range(3, MINUTES + 1, 7)]
    result = promtool_comparison(tmp_path, [comparison_case("generated fleet", generated_fleet(), times, True)],
                                 intended=False)
    assert result.returncode != 0
    assert differing_records(result.stdout + result.stderr) == set(INTENDED)


@pytest.mark.parametrize("broken", ["users' mistakes in the routes' ratio", "the mean duration"])
def test_the_comparison_finds_a_difference(tmp_path: Path, broken: str) -> None:
    # The check can fail: a shipped rule changed a little is caught.
    changes = {
        "users' mistakes in the routes' ratio": ("job_handler:rucio_jupyterlab_http_request_errors:ratio_rate5m",
                                                 '{fault="service"}', '{fault=~"service|user"}'),
        "the mean duration": ("job_handler:rucio_jupyterlab_http_request_duration_seconds:mean5m", "", ""),
    }
    record, before, now = changes[broken]
    rules = load_yaml(SHIPPED)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == record:
                assert before in rule["expr"]
                rule["expr"] = rule["expr"].replace(before, now) if before else rule["expr"] + " * 1.000001"
    changed = tmp_path / "changed.yml"
    changed.write_text(yaml.safe_dump(rules, sort_keys=False))
    case = comparison_case("generated fleet", generated_fleet(), ["45m", "120m"], True)
    result = promtool_comparison(tmp_path, [case], shipped=changed)
    assert result.returncode != 0
    assert differing_records(result.stdout + result.stderr) == {record}
