"""The documentation against the code: the metrics reference names exactly what metrics.py exports, and every
alert rule's runbook link lands on a section of docs/runbook.md.

Docs that drift from the code mislead an operator at the worst moment (an alert fired, a metric is missing), so a
metric added without a line in docs/reference/metrics.md, or documented but gone, fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from dbguardian.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
METRICS_DOC = DOCS / "reference" / "metrics.md"
RUNBOOK = DOCS / "runbook.md"
RULES = REPO / "config" / "prometheus" / "dbguardian.rules.yml"
RULE_TESTS = REPO / "config" / "prometheus" / "dbguardian.rules.test.yml"

# A row of the metrics table: | `name` | type | `label`, `label` | meaning |
_ROW = re.compile(r"^\|\s*`(dbguardian_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")
_LABEL = re.compile(r"`(\w+)`")
# Sample labels that the exposition adds, not the metric's own labels.
_EXPOSITION_LABELS = {"le", "quantile"}


@dataclass(frozen=True)
class MetricDoc:
    kind: str
    labels: frozenset[str] | None  # None: not known (a custom collector that exported no sample yet)


def documented_metrics(text: str) -> dict[str, MetricDoc]:
    """Metrics in the reference's tables, by exposed name (counters with ``_total``)."""
    found: dict[str, MetricDoc] = {}
    for line in text.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        name, kind, labels = match.groups()
        assert name not in found, f"{name} is documented twice"
        found[name] = MetricDoc(kind, frozenset(_LABEL.findall(labels)))
    return found


def defined_metrics() -> dict[str, MetricDoc]:
    """Metric families of a fresh ``Metrics()`` registry, by exposed name.

    prometheus_client names a counter's family without ``_total`` (its samples carry it) and renders extra sample
    names for histograms and counters (``_bucket``, ``_created``, ...): compare families, not sample names.
    """
    metrics = Metrics()
    declared = {
        wrapper._name: frozenset(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    found: dict[str, MetricDoc] = {}
    for family in metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = declared.get(family.name)
        if labels is None and family.samples:
            labels = frozenset(key for sample in family.samples for key in sample.labels) - _EXPOSITION_LABELS
        found[name] = MetricDoc(family.type, labels)
    return found


def test_table_parser_reads_names_types_and_labels() -> None:
    text = "\n".join(
        [
            "| metric | type | labels | meaning |",
            "|---|---|---|---|",
            "| `dbguardian_a_total` | counter | `target`, `result` | runs |",
            "| `dbguardian_b` | gauge | | always 1 |",
            "not a row `dbguardian_c` | gauge |",
        ]
    )
    assert documented_metrics(text) == {
        "dbguardian_a_total": MetricDoc("counter", frozenset({"target", "result"})),
        "dbguardian_b": MetricDoc("gauge", frozenset()),
    }


def test_defined_metrics_are_families_with_exposed_counter_names() -> None:
    defined = defined_metrics()
    assert defined["dbguardian_backup_runs_total"] == MetricDoc("counter", frozenset({"target", "tier", "result"}))
    assert defined["dbguardian_backup_duration_seconds"].kind == "histogram"
    assert not any(name.endswith(("_bucket", "_created", "_count", "_sum")) for name in defined)
    assert "dbguardian_backup_runs" not in defined


def test_metrics_reference_names_exactly_the_defined_metrics() -> None:
    documented = documented_metrics(METRICS_DOC.read_text())
    defined = defined_metrics()
    assert sorted(set(defined) - set(documented)) == [], "defined in dbguardian/metrics.py, missing in the reference"
    assert sorted(set(documented) - set(defined)) == [], "documented in the reference, not defined in dbguardian/metrics.py"


def test_metrics_reference_gives_each_metric_its_type_and_labels() -> None:
    documented = documented_metrics(METRICS_DOC.read_text())
    for name, defined in defined_metrics().items():
        doc = documented.get(name)
        if doc is None:
            continue  # reported by the test above
        assert doc.kind == defined.kind, name
        if defined.labels is not None:
            assert doc.labels == defined.labels, name


# ------------------------------------------------------------------------------------------ alert runbook


def slug(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading: lower case, punctuation dropped."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {slug(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if re.match(r"^#{2,3} ", line)}


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_slug_matches_github_anchors() -> None:
    assert slug("DbguardianBackupTooOld") == "dbguardianbackuptooold"
    assert slug("Restore a damaged database: `--force`") == "restore-a-damaged-database---force"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_links_its_runbook_section(rule: dict[str, object]) -> None:
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    url = annotations["runbook_url"]
    path, _, anchor = url.partition("#")
    assert path == "docs/runbook.md", url
    assert anchor == slug(str(rule["alert"])), "anchor is the alert's name, so it stays stable"
    assert anchor in runbook_anchors(), f"docs/runbook.md has no section {anchor}"
    assert url in annotations["runbook"], "the text operators read in Slack or email names the section too"


def test_rule_unit_tests_expect_the_runbook_links() -> None:
    """promtool compares every annotation, so the expected alerts in the rule tests carry the links as well."""
    urls = {str(rule["alert"]): rule["annotations"]["runbook_url"] for rule in alert_rules()}  # type: ignore[index]
    seen = 0
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                assert alert["exp_annotations"]["runbook_url"] == urls[check["alertname"]]
                seen += 1
    assert seen > 0


def test_runbook_has_a_section_per_alert_and_no_orphans() -> None:
    alerts = {slug(str(rule["alert"])) for rule in alert_rules()}
    sections = {anchor for anchor in runbook_anchors() if anchor.startswith("dbguardian")}
    assert sections == alerts


# ------------------------------------------------------------------------------------------ links

_LINK = re.compile(r"\]\(([^)\s]*)\)")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "bench" / "README.md", *sorted(DOCS.rglob("*.md"))]


def headings(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"^#{1,6} ", line)}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_land_on_files_and_sections(path: Path) -> None:
    for target in _LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.relative_to(REPO)} links to a missing {target}"
        if anchor:
            assert anchor in headings(linked), f"{path.relative_to(REPO)} links to a missing section {target}"


def test_readme_starts_with_the_two_commands_and_stays_short() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    first_block = lines[lines.index("```sh") + 1 : lines.index("```")]
    assert [line.split()[0] for line in first_block if not line.lstrip().startswith("#")] == ["scripts/demo", "scripts/test"]
    assert 'scripts/test -m "not slow"' in "\n".join(lines)
