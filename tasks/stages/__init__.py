"""The Prefect tasks, one module per node of the DAGs; nowhere else defines a ``@task``.

Each stage opens its action's MLflow run, computes with the pure modules below
it, logs every number, and returns an ``Outcome`` (or a *Blocked* state). The
flows import each task from its module: ``from tasks.stages.statistics import
statistics_stage``.
"""
