"""The README, the pages under docs/ and the code say the same things."""

from __future__ import annotations

import logging
import re

from prometheus_client import CollectorRegistry
from traitlets.config import Config, Configurable

from rucio_metrics.config import RucioMetrics, load_options
from rucio_metrics.metrics import Metrics

from .servers.jupyter_server_process import REPO

README = (REPO / "README.md").read_text()
METRICS_PAGE = (REPO / "docs" / "metrics.md").read_text()
DOCS = README + "".join(page.read_text() for page in sorted((REPO / "docs").glob("*.md")))


def code_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README and every docs page."""
    return re.findall(rf"```{language}\n(.*?)```", DOCS, re.S)


def test_the_config_examples_run_and_apply(caplog):
    examples = [b for b in code_blocks("python") if "c.RucioMetrics" in b]
    assert len(examples) >= 2
    for example in examples:
        c = Config()
        exec(example, {"c": c})
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            options = load_options(Configurable(config=c), logging.getLogger("test"))
        assert caplog.records == [], example
        for name, value in c.RucioMetrics.items():
            expected = [float(b) for b in value] if name == "buckets" else value
            assert getattr(options, name) == expected, (example, name)


def test_the_readme_scrape_config_is_the_shipped_one_for_the_listener_it_configures():
    import yaml

    from .support.deploy_files import PROMETHEUS_DIR

    [shipped] = yaml.safe_load((PROMETHEUS_DIR / "jupyter-server.yml").read_text())["scrape_configs"]
    blocks = [b for b in code_blocks("yaml") if "job_name: jupyter\n" in b]
    assert blocks
    for block in blocks:  # the README's and the operations page's
        [readme_job] = yaml.safe_load(block)["scrape_configs"]
        for key in ("job_name", "metrics_path", "static_configs"):
            assert readme_job[key] == shipped[key], key
        assert readme_job["authorization"]["type"] == shipped["authorization"]["type"] == "Bearer"
    listeners = [b for b in code_blocks("python") if "metrics_port" in b]
    assert listeners
    for listener in listeners:
        c = Config()
        exec(listener, {"c": c})
        assert shipped["static_configs"][0]["targets"] == [f"127.0.0.1:{c.RucioMetrics.metrics_port}"]


def test_every_option_is_in_the_table_with_its_default():
    rows = dict(re.findall(r"^\| `(\w+)` \| `(.+?)` \|", README, re.M))
    for name, trait in RucioMetrics.class_traits(config=True).items():
        assert name in rows, name
        assert eval(rows[name]) == trait.default(), name  # the README shows the Python literal


def test_every_transfer_metric_in_the_table_exists_with_its_labels():
    from rucio_metrics.transfers import TransferMetrics

    registry = CollectorRegistry()
    TransferMetrics.on(registry)
    families = {m.name: m.type for m in registry.collect()}
    rows = re.findall(r"^\| `(rucio_jupyterlab_transfers?_\w+)` \| (\w+)", README, re.M)
    assert sorted(name.removesuffix("_total") for name, _ in rows) == sorted(families)
    for name, kind in rows:
        assert families[name.removesuffix("_total")] == kind, name


def test_every_metric_in_the_table_exists_with_that_type():
    metrics = Metrics.on(CollectorRegistry())
    families = {m.name: m.type for m in metrics.registry.collect()}
    rows = re.findall(r"^\| `(rucio_jupyterlab_http_\w+)` \| (\w+)", README, re.M)
    assert len(rows) == len(families)  # every family is in the table
    for name, kind in rows:
        base = name.removesuffix("_total")
        assert families.get(base) == kind, name


def test_every_known_upstream_issue_names_tests_that_show_its_series():
    section = METRICS_PAGE.split("## Known issues of rucio-jupyterlab 41 the metrics show\n", 1)[1].split("\n## ", 1)[0]
    rows = [row for row in re.findall(r"^\| (.+) \|$", section, re.M) if "test_" in row]
    assert len(rows) == 11
    sources = "".join((REPO / "tests" / name).read_text()
                      for name in ("test_rucio_routes.py", "test_rucio_faults.py", "test_transfers.py",
                                   "test_transfer_results.py"))
    for row in rows:
        tests = re.findall(r"`(test_\w+)`", row.rsplit(" | ", 1)[1])
        assert tests, row
        for test in tests:
            body = re.search(rf"^def {test}\(.*?(?=^def |\Z)", sources, re.M | re.S)
            assert body is not None, test
            # The labels the row names are the ones the test asserts.
            for label, value in re.findall(r'(exception|outcome)="(\w+)"', row.rsplit(" | ", 1)[0]):
                if label == "exception":
                    assert f'exception="{value}"' in body.group(0), (test, value)
                else:
                    assert f'"{value}"' in body.group(0), (test, value)


def test_the_fleet_recommendation_drops_only_jupyter_servers_histogram_of_the_rucio_routes(tmp_path):
    import yaml

    from .support.deploy_files import PROMETHEUS_DIR, promtool

    [block] = [b for b in code_blocks("yaml") if "http_request_duration_seconds_(bucket" in b]
    [rule] = yaml.safe_load(block)["metric_relabel_configs"]
    assert (rule["source_labels"], rule["action"]) == (["__name__", "handler"], "drop")

    def dropped(name: str, handler: str = "") -> bool:  # Prometheus anchors the regex and joins with ";"
        return re.fullmatch(rule["regex"], f"{name};{handler}") is not None

    for suffix in ("bucket", "count", "sum", "created"):
        assert dropped(f"http_request_duration_seconds_{suffix}", "rucio_jupyterlab.handlers.list_rses.ListRSEsHandler")
    assert not dropped("http_request_duration_seconds_count", "jupyter_server.services.api.handlers.APIStatusHandler")
    assert not dropped("rucio_jupyterlab_http_requests_total", "/rucio-jupyterlab/list-rses")
    assert not dropped("rucio_jupyterlab_requests_total")
    # Prometheus takes it in a shipped scrape config.
    config = yaml.safe_load((PROMETHEUS_DIR / "jupyterhub-fleet.yml").read_text())
    config["rule_files"] = []
    config["scrape_configs"][0]["metric_relabel_configs"].append(rule)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "--syntax-only", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
