"""The observability profile's files, checked without starting it: they parse, every alert has a
runbook and a promtool test, every dashboard has the fields Grafana requires and its queries are
found, and the compose profile keeps its promises (nothing without it, nothing public with it)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from core.settings import Settings
from tests.support import ROOT
from tests.support.compose_config import PROD, PROD_SECRETS, compose_config
from tests.support.observability import (
    OBSERVABILITY,
    alert_rules,
    dashboard_queries,
    dashboards,
    panels,
)

PROFILE_SERVICES = {
    "prometheus",
    "alertmanager",
    "job-exporter",
    "postgres-exporter",
    "redis-exporter",
    "jaeger",
}


def test_configuration_files_parse():
    for path in [
        OBSERVABILITY / "prometheus.yml",
        *OBSERVABILITY.glob("rules/*.yml"),
        *OBSERVABILITY.glob("tests/*.yml"),
        *OBSERVABILITY.glob("grafana/provisioning/*/*.yml"),
    ]:
        assert yaml.safe_load(path.read_text()), path


def test_every_alert_has_a_runbook_entry_and_a_promtool_test():
    runbook_text = (ROOT / "docs" / "runbook.md").read_text()
    anchors = set(re.findall(r'<a id="(runbook-[a-z0-9-]+)"></a>', runbook_text))
    tested = " ".join(p.read_text() for p in OBSERVABILITY.glob("tests/*.test.yml"))
    rules = alert_rules()
    assert len(rules) >= 14
    for rule in rules:
        name = rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/runbook.md#runbook-"), name
        assert runbook.removeprefix("docs/runbook.md#") in anchors, f"{name}: no runbook entry"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", tested), (
            f"{name}: no promtool test sees it fire"
        )


def test_every_rule_file_has_its_test_file():
    for rules in OBSERVABILITY.glob("rules/*.yml"):
        test = OBSERVABILITY / "tests" / f"{rules.stem}.test.yml"
        assert f"../rules/{rules.name}" in test.read_text()


# The fields Grafana's dashboard schema (schemaVersion 39, the JSON model) requires to load a
# dashboard from a file and place its panels; the full schema is not on this machine.
DASHBOARD_REQUIRED = ("uid", "title", "schemaVersion", "panels", "time")
PANEL_REQUIRED = ("id", "type", "title", "gridPos", "datasource", "targets")


def test_dashboards_have_the_required_fields_and_unique_ids():
    found = dashboards()
    assert set(found) == {"http.json", "jobs.json", "data.json"}
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in found.items():
        for field in DASHBOARD_REQUIRED:
            assert field in dashboard, f"{name}: {field}"
        assert isinstance(dashboard["schemaVersion"], int)
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(set(ids)) == len(ids), name
        for panel in panels(dashboard):
            for field in PANEL_REQUIRED:
                assert field in panel, f"{name} {panel.get('title')}: {field}"
            assert set(panel["gridPos"]) >= {"h", "w", "x", "y"}
            # The provisioned datasource, by its uid (provisioning/datasources/prometheus.yml).
            assert panel["datasource"]["uid"] == "prometheus"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(set(refs)) == len(refs)


def test_dashboard_queries_are_found_and_balanced():
    queries = dashboard_queries()
    assert len(queries) >= 25
    for name, title, expr in queries:
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), f"{name} {title}: {expr}"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker: make lint-alerts needs it")
def test_dashboard_queries_parse_as_promql(tmp_path):
    """promtool parses each query as a recording rule's expression."""
    image = "prom/prometheus:v3.1.0"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        pytest.skip(f"no {image} image (../shared/docker/standins {image})")
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": expr}
                    for i, (_, _, expr) in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    # promtool runs as nobody in the image.
    tmp_path.chmod(0o755)
    (tmp_path / "queries.yml").chmod(0o644)
    proc = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/promtool"),
            *("-v", f"{tmp_path}:/q:ro", image, "check", "rules", "/q/queries.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_without_the_profile_nothing_changes():
    dev = compose_config()
    assert not PROFILE_SERVICES & set(dev["services"])
    assert "monitoring" not in dev["networks"]


@pytest.mark.parametrize("files", [("compose.yaml",), PROD])
def test_the_profile_publishes_on_loopback_only_and_joins_no_public_router(files):
    config = compose_config(*files, COMPOSE_PROFILES="observability", **PROD_SECRETS)
    assert PROFILE_SERVICES <= set(config["services"])
    for name in PROFILE_SERVICES:
        service = config["services"][name]
        assert service["profiles"] == ["observability"], name
        assert not any(k.startswith("traefik.") for k in service.get("labels", {})), name
        assert "socket" not in service["networks"], name
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
    published = {n for n, s in config["services"].items() if s.get("ports")}
    assert published == {"proxy", "prometheus", "alertmanager", "jaeger"}
    # Traefik's metrics entrypoint exists and no port publishes it.
    proxy = config["services"]["proxy"]
    assert "--entryPoints.metrics.address=:8082" in proxy["command"]
    assert "--metrics.prometheus.entryPoint=metrics" in proxy["command"]
    assert 8082 not in {p["target"] for p in proxy["ports"]}
    # Exporters and Prometheus reach the app's internal network; Alertmanager does not need to.
    assert "backend" in config["services"]["prometheus"]["networks"]
    assert "backend" not in config["services"]["alertmanager"]["networks"]


@pytest.mark.parametrize("files", [("compose.yaml",), PROD])
def test_backup_metrics_volume_is_written_by_backup_only_and_read_by_the_job_exporter(files):
    config = compose_config(*files, COMPOSE_PROFILES="observability,grafana", **PROD_SECRETS)
    mounts = {
        name: [v for v in service.get("volumes", []) if v.get("source") == "backup-metrics"]
        for name, service in config["services"].items()
    }
    mounted = {name: volumes for name, volumes in mounts.items() if volumes}
    assert set(mounted) == {"backup", "job-exporter"}
    (writer,) = mounted["backup"]
    (reader,) = mounted["job-exporter"]
    assert writer["type"] == reader["type"] == "volume"
    assert not writer.get("read_only")
    assert reader["read_only"] is True
    # Where db/bin/kit-backup-scheduler writes and where BACKUP_METRICS_FILE points.
    script = (ROOT / "db" / "bin" / "kit-backup-scheduler").read_text()
    assert f"METRICS_FILE={writer['target']}/backup.prom" in script
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert defaults["backup_metrics_file"] == f"{reader['target']}/backup.prom"
    # Not under the volumes whose free space is reported; the repository is one of those.
    volumes = {v["target"]: v for v in config["services"]["job-exporter"]["volumes"]}
    assert not reader["target"].startswith(defaults["volumes_dir"])
    assert volumes["/volumes/pgbackrest"]["source"] == "pgbackrest"
    assert all(v["read_only"] is True for v in volumes.values())


def test_grafana_is_opt_in_on_loopback_with_the_repository_provisioning():
    config = compose_config(*PROD, COMPOSE_PROFILES="observability,grafana", **PROD_SECRETS)
    grafana = config["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"]
    assert [p["host_ip"] for p in grafana["ports"]] == ["127.0.0.1"]
    targets = {v["target"]: v["source"] for v in grafana["volumes"]}
    assert targets["/etc/grafana/provisioning"] == str(OBSERVABILITY / "grafana" / "provisioning")
    assert targets["/var/lib/grafana/dashboards"] == str(OBSERVABILITY / "grafana" / "dashboards")
    assert {s["source"] for s in grafana["secrets"]} == {"grafana_admin_password"}
    assert "grafana" not in compose_config(COMPOSE_PROFILES="observability")["services"]


def test_production_profile_secrets_are_files_given_only_where_used():
    config = compose_config(*PROD, COMPOSE_PROFILES="observability", **PROD_SECRETS)
    expected = {
        "alertmanager": {"alertmanager_webhook_url", "alertmanager_smtp_password"},
        "job-exporter": {"postgres_app_password", "redis_password"},
        "postgres-exporter": {"postgres_password"},
        "redis-exporter": {"redis_exporter_password_map"},
        "prometheus": set(),
    }
    for name, secrets in expected.items():
        service = config["services"][name]
        assert {s["source"] for s in service.get("secrets", [])} == secrets, name
        environment = service.get("environment") or {}
        for leaked in ("DATA_SOURCE_PASS", "ALERT_WEBHOOK_URL", "POSTGRES_PASSWORD"):
            assert leaked not in environment, f"{name}: {leaked} in its environment"
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["deploy"]["resources"]["limits"]["memory"], name


def _render_alertmanager_config(tmp_path, **env: str) -> dict:
    script = (OBSERVABILITY / "alertmanager" / "entrypoint.sh").read_text()
    # Everything but the exec of Alertmanager.
    (tmp_path / "render.sh").write_text(re.sub(r"(?ms)^exec /bin/alertmanager.*", "", script))
    out = tmp_path / "alertmanager.yml"
    subprocess.run(
        ["sh", str(tmp_path / "render.sh")],
        env={
            "PATH": "/usr/bin:/bin",
            "ALERTMANAGER_CONFIG_OUT": str(out),
            "ALERTMANAGER_SECRETS_DIR": str(tmp_path),
            **env,
        },
        check=True,
    )
    return yaml.safe_load(out.read_text())


def test_alertmanager_configuration_from_environment_and_secret_files(tmp_path):
    none = _render_alertmanager_config(tmp_path)
    assert none["receivers"] == [{"name": "default"}]

    (tmp_path / "alertmanager_webhook_url").write_text("https://hooks.example.com/t/it's\n")
    (tmp_path / "alertmanager_smtp_password").write_text("p'w\n")
    both = _render_alertmanager_config(
        tmp_path,
        ALERT_WEBHOOK_URL="http://ignored-when-the-file-has-one",
        ALERT_EMAIL_TO="ops@example.com",
        ALERT_EMAIL_FROM="alerts@example.com",
        ALERT_SMTP_SMARTHOST="smtp.example.com:587",
        ALERT_SMTP_USERNAME="alerts",
        ALERT_GROUP_WAIT="5s",
    )
    receiver = both["receivers"][0]
    assert receiver["webhook_configs"][0]["url"] == "https://hooks.example.com/t/it's"
    assert receiver["webhook_configs"][0]["send_resolved"] is True
    email = receiver["email_configs"][0]
    assert (email["to"], email["auth_password"]) == ("ops@example.com", "p'w")
    assert both["route"]["group_wait"] == "5s"


def test_production_alone_loads_the_production_rules():
    """rules/production/ (TlsCertificateMissing) holds in production only: development serves
    Traefik's own certificate on purpose. prometheus.yml globs where compose.prod.yaml mounts it."""
    globs = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())["rule_files"]
    assert "/etc/prometheus/rules-production/*.yml" in globs

    def mounts(config):
        volumes = config["services"]["prometheus"]["volumes"]
        return {v["target"]: v["source"] for v in volumes}

    prod = compose_config(*PROD, **PROD_SECRETS, COMPOSE_PROFILES="observability")
    dev = compose_config(COMPOSE_PROFILES="observability")
    assert mounts(prod)["/etc/prometheus/rules-production"] == str(
        OBSERVABILITY / "rules/production"
    )
    assert "/etc/prometheus/rules-production" not in mounts(dev)
