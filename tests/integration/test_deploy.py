"""The scale-out configuration files: they parse, they agree with each other, and the
executor switch builds what it says (without starting any service)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), path
    return docs


def test_celery_yaml_is_valid_executor_config() -> None:
    from dagster._config import validate_config
    from dagster_celery import celery_executor

    config = _docs(DEPLOY / "celery.yaml")[0]["execution"]["config"]
    assert validate_config(celery_executor.config_schema.config_type, config).success
    source = config["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]
    assert source["worker_prefetch_multiplier"] == 1
    assert source["broker_transport_options"]["visibility_timeout"] >= 3600


def test_multi_machine_instance_uses_postgres_and_a_wide_queue() -> None:
    instance = _docs(DEPLOY / "dagster.celery.yaml")[0]
    assert set(instance["storage"]["postgres"]["postgres_db"]) >= {"hostname", "password"}
    assert instance["run_coordinator"]["config"]["max_concurrent_runs"] > 1
    limits = instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    from mammo_dagster.defs.active import retrain_job

    # the limit matches a tag the retrain runs really carry (Dagster adds no job-name tag)
    assert {"key": "mammo/job", "value": "retrain", "limit": 1} in limits
    assert retrain_job.tags["mammo/job"] == "retrain"
    single = _docs(DEPLOY.parent / "dagster.yaml")[0]  # the default stays as it was
    assert "storage" not in single
    assert single["run_coordinator"]["config"]["max_concurrent_runs"] == 1


def test_kubernetes_files_agree_on_the_data_folder() -> None:
    pvc = _docs(DEPLOY / "k8s" / "mammo-home-pvc.yaml")[0]
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    claim = pvc["metadata"]["name"]
    values = _docs(DEPLOY / "k8s" / "values.yaml")[0]
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    mount = k8s["volumeMounts"][0]["mountPath"]
    assert f"MAMMO_HOME={mount}" in k8s["envVars"] and "MAMMO_EXECUTOR=k8s" in k8s["envVars"]
    assert k8s["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    queue = values["dagster-daemon"] if "dagster-daemon" in values else values["dagsterDaemon"]
    limits = queue["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "mammo/job", "value": "retrain", "limit": 1} in limits
    code = values["dagster-user-deployments"]["deployments"][0]
    assert code["dagsterApiGrpcArgs"] == ["-m", "mammo_dagster.definitions"]
    assert {"name": "MAMMO_HOME", "value": mount} in code["env"]
    assert code["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    deployment, service = _docs(DEPLOY / "k8s" / "labeler.yaml")
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one labeler
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MAMMO_HOME"]["value"] == mount and "MAMMO_LABELER_TOKEN" in env
    assert "MAMMO_PATIENT_SALT" not in env  # the networked pod needs no salt
    assert container["volumeMounts"][0]["mountPath"] == mount
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def _defs(monkeypatch: pytest.MonkeyPatch, **env: str) -> dg.Definitions:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from mammo_dagster.definitions import defs

    return defs()


def test_executor_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = _defs(monkeypatch, MAMMO_EXECUTOR="")
    assert (
        default.resolve_job_def("process_drop").executor_def.name == "multi_or_in_process_executor"
    )
    celery = _defs(
        monkeypatch,
        MAMMO_EXECUTOR="celery",
        MAMMO_CELERY_CONFIG=str(DEPLOY / "celery.yaml"),
    )
    assert celery.resolve_job_def("process_drop").executor_def.name == "celery"
    from mammo_dagster.defs.executor import executor  # the errors, unwrapped

    monkeypatch.setenv("MAMMO_EXECUTOR", "spark")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="MAMMO_EXECUTOR must be"):
        executor()
    monkeypatch.setenv("MAMMO_EXECUTOR", "celery")
    monkeypatch.delenv("MAMMO_CELERY_CONFIG")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="needs MAMMO_CELERY_CONFIG"):
        executor()
    (tmp_path / "bad.yaml").write_text("broker: redis://x\n")
    monkeypatch.setenv("MAMMO_CELERY_CONFIG", str(tmp_path / "bad.yaml"))
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="under execution: config:"):
        executor()
