"""Which executor runs the steps: the multiprocess default, or Celery across machines.

`MAMMO_EXECUTOR=celery` sends every step to Celery workers (`dagster-celery`),
configured by the YAML file `MAMMO_CELERY_CONFIG` names, the same file the
workers start with (`dagster-celery worker start -A dagster_celery.app -y FILE`),
so the run and its workers can't disagree about the broker. Anything else (or
unset) keeps the single-machine default: no broker, nothing to start.
`MAMMO_EXECUTOR=k8s` runs each step as its own Kubernetes Job (`dagster-k8s`'s
`k8s_job_executor`, for sites on Kubernetes: see deploy/k8s/).
"""

import os
from pathlib import Path

import dagster as dg
import yaml

ENV_EXECUTOR = "MAMMO_EXECUTOR"
ENV_CELERY_CONFIG = "MAMMO_CELERY_CONFIG"


def celery_config() -> dict:
    """The Celery executor's config (broker, backend, config_source) from its YAML file."""
    name = os.environ.get(ENV_CELERY_CONFIG)
    if not name:
        raise dg.DagsterInvalidDefinitionError(
            f"{ENV_EXECUTOR}=celery needs {ENV_CELERY_CONFIG}: the YAML file the workers "
            "start with (see deploy/celery.yaml)"
        )
    try:
        config = yaml.safe_load(Path(name).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise dg.DagsterInvalidDefinitionError(f"{ENV_CELERY_CONFIG}={name}: {e}") from None
    config = config.get("execution", {}).get("config") if isinstance(config, dict) else None
    if not isinstance(config, dict):
        raise dg.DagsterInvalidDefinitionError(
            f"{name}: expected the executor settings under execution: config:"
        )
    return config


@dg.definitions
def executor() -> dg.Definitions:
    kind = os.environ.get(ENV_EXECUTOR, "multiprocess").strip().lower()
    if kind in ("", "multiprocess", "default"):
        return dg.Definitions()
    if kind == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise dg.DagsterInvalidDefinitionError(
                f"{ENV_EXECUTOR}=k8s needs dagster-k8s: pip install 'mammo-dagster[k8s]'"
            ) from None
        return dg.Definitions(executor=k8s_job_executor)
    if kind != "celery":
        raise dg.DagsterInvalidDefinitionError(
            f"{ENV_EXECUTOR} must be multiprocess, celery or k8s, got {kind!r}"
        )
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise dg.DagsterInvalidDefinitionError(
            f"{ENV_EXECUTOR}=celery needs dagster-celery: pip install 'mammo-dagster[scale]'"
        ) from None
    return dg.Definitions(executor=celery_executor.configured(celery_config(), name="celery"))
