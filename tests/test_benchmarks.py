"""The benchmarks still run and measure what they say (quick mode; no timing assertions)."""

from __future__ import annotations

import asyncio
import math
import re
import sys

import requests
from prometheus_client import CollectorRegistry

from .servers.jupyter_server_process import REPO, TOKEN

sys.path.insert(0, str(REPO))  # benchmarks/ sits beside the package, it is not installed

from benchmarks import fleet, fleet_sharded, hot_path, run, scrape, time_to_data, transfers

ROUTE = {"handler": "/rucio-jupyterlab/instances", "method": "GET"}


def test_the_in_process_requests_run_to_their_end(registry: CollectorRegistry):
    asyncio.run(hot_path.serve(hot_path.rucio_metrics_app("summary", registry), 250))
    assert registry.get_sample_value("rucio_jupyterlab_http_requests_total", {**ROUTE, "status_code": "200"}) == 250
    assert registry.get_sample_value("rucio_jupyterlab_http_request_duration_seconds_count", ROUTE) == 250
    assert registry.get_sample_value("rucio_jupyterlab_http_requests_in_progress", ROUTE) == 0


def test_hot_path_reports_every_variant_with_numbers():
    results = {r.name: r for r in hot_path.run(rounds=2, requests=100, profiled_requests=20)}
    assert list(results) == [
        "plain", "upstream decorator", "jupyter_server histogram", "prometheus_client floor",
        "rucio_metrics (summary)", "rucio_metrics (histogram)",
    ]
    for r in results.values():
        assert r.us_per_request > 0 and math.isfinite(r.added_us) and r.ratio > 0
        assert r.calls_per_request > 100
    # Call counts are deterministic: every instrumented variant does some work, the plain one none.
    assert results["plain"].added_calls == 0
    assert all(r.added_calls > 0 for name, r in results.items() if name != "plain")


def test_scrape_renders_every_route_verb_and_status():
    summary, histogram = scrape.measure(renders=3)
    pairs = sum(len(methods) for methods in scrape.ROUTES.values())
    assert len(scrape.ROUTES) == 16
    assert summary.series > pairs * len(scrape.STATUSES)
    assert histogram.series > summary.series and histogram.bytes > summary.bytes > 0
    assert summary.ms_per_render > 0


def test_transfers_measures_renders_without_file_io_and_reads_off_the_loop():
    cost = transfers.measure(renders=5, files=50, reads=3, seconds=0.3)
    assert cost.opens_during_renders == 0
    assert cost.series > 100 and cost.ms_per_render > 0 and cost.ms_per_result > 0
    assert cost.results_read > 0 and cost.lag_idle_ms[1] >= cost.lag_idle_ms[0] >= 0


def test_time_to_data_measures_every_operation_and_the_memory_of_open_waits():
    costs = time_to_data.measure(rounds=2, calls=200, profiled_calls=20)
    assert [c.operation for c in costs] == [o.name for o in time_to_data.OPERATIONS]
    for cost in costs:
        assert cost.plain_us > 0 and math.isfinite(cost.added_us)
        assert cost.added_calls > 0  # the wrapper does some work on every call, deterministic
    memory = time_to_data.memory(tracked=1000)
    assert memory.waits == 1000 and 0 < memory.bytes_per_wait < 10_000


def test_the_quick_report_prints_tables_and_targets(capsys):
    assert run.main(["--quick", "--in-process-only"]) == 0
    report = capsys.readouterr().out
    assert "| rucio_metrics (summary) |" in report
    assert "| rucio_metrics families only, histogram |" in report
    assert "added CPU per request in-process ≤ 3 µs" in report
    assert "### Transfers" in report and "a scrape never blocks on disk or database I/O" in report
    assert "Machine: " in report


EXPOSITION = """\
# HELP a_total Requests.
# TYPE a_total counter
a_total{handler="/x"} 2.0
a_created{handler="/x"} 1.7e+09
# HELP b_seconds Durations.
# TYPE b_seconds histogram
b_seconds_bucket{le="0.1"} 1.0
b_seconds_bucket{le="+Inf"} 3.0
b_seconds_count 3.0
b_seconds_sum 0.5
# HELP c Now.
# TYPE c gauge
c 4.0
"""


def test_fleet_payload_counters_advance_and_the_rest_stays():
    payload = fleet.Payload(EXPOSITION)
    assert payload.render(0).decode() == EXPOSITION
    after = payload.render(2).decode()  # two more mixes: three times the counts
    assert 'a_total{handler="/x"} 6.0\na_created{handler="/x"} 1.7e+09\n' in after
    assert 'b_seconds_bucket{le="+Inf"} 9.0\nb_seconds_count 9.0\nb_seconds_sum 1.5\n' in after
    assert "\nc 4.0\n" in after


def test_the_simulated_fleet_serves_each_target_with_the_token():
    with fleet.SimulatedFleet(fleet.Payload(EXPOSITION), 3) as simulated, requests.Session() as session:
        session.trust_env = False
        [target] = [t for t in simulated.targets() if t["labels"]["instance"] == "server-2"]
        url = f"http://{target['targets'][0]}{target['labels']['__metrics_path__']}"
        assert session.get(url, headers={"Authorization": f"token {TOKEN}"}).text == EXPOSITION
        assert session.get(url).status_code == 403
        assert session.get(url.replace("server-2", "server-3"), headers={"Authorization": f"token {TOKEN}"}
                           ).status_code == 404


def test_the_quick_fleet_report_prints_budget_fleet_and_remote_write(capsys):
    assert fleet.main(["--quick", "--variants", "rules,shipped-churn"]) == 0
    report = capsys.readouterr().out
    budget = re.search(r"^\| rucio_metrics \(.+?\) \| (\d+) \| (\d+) \| [\d,]+ \|$", report, re.M)
    assert budget and int(budget.group(2)) < int(budget.group(1))
    assert re.search(rf"^Target: at most {fleet.SERIES_TARGET} series per server without `_created`: \d+ \(holds\)\.$",
                     report, re.M)
    for variant in fleet.RUNS["rules"] + fleet.RUNS["shipped-churn"]:
        rows = re.findall(rf"^\| {variant} \| (\d+) \| (\d+) \| (\d+) \| ([\d,]+) \|", report, re.M)
        assert [n for n, *_ in rows] == ["2", "4"], variant
        for n, up, replaced, _ in rows:
            # Every server up at each scrape it was in; churn replaces some of them
            # (those Prometheus scraped before the window ended count too).
            assert int(n) <= int(up) <= int(n) + int(replaced), variant
            assert (int(replaced) > 0) == variant.churn, variant
        assert int(rows[1][3].replace(",", "")) > int(rows[0][3].replace(",", ""))  # head series grow
        assert f"| {variant}: growth per 100 servers |" in report
    assert re.search(r"^- Without churn: at 4 servers the shipped rules take", report, re.M)
    shipped = re.search(r"Prometheus holds ([\d,]+) series, VictoriaMetrics received ([\d,]+)", report)
    assert shipped and int(shipped.group(2).replace(",", "")) < int(shipped.group(1).replace(",", ""))
    assert "`rucio_jupyterlab_http_requests_total`" not in report.split("### Remote write")[1]


def test_the_quick_sharded_report_measures_every_part_and_the_rules(capsys):
    assert fleet_sharded.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for part in ("agent 0", "agent 1", "VictoriaMetrics", "vmalert"):
        assert re.search(rf"^\| 2 s \| {part} \| \d+ \| [1-9]\d* \|$", out, re.M), part
    # Every target's series reached the store, the rules ran without an error.
    [row] = re.findall(r"^\| 2 s \| (\d+) \| (\d+) \| \d+% \| (\d+) \| (\d+) \| (\d+) \|$", out, re.M)
    series, rules_ms, errors, _missed, evaluations = map(int, row)
    assert series > 6 * 200 and rules_ms > 0 and errors == 0 and evaluations > 0
    assert re.search(r"^Largest series set one selector reads: `rucio_jupyterlab_\w+`, \d+ series a server", out, re.M)
