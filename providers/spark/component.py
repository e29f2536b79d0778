"""``SparkApplicationComponent``: a Spark Operator SparkApplication as a Pulumi component,
built by ``manifests.spark_application`` (the object the kubernetes backend applies for the
same config). Sensitive ``spark_conf`` / ``hadoop_conf`` entries (``fs.s3a.secret.key``) are
Pulumi secrets: encrypted in Pulumi's state, hashed placeholders in the engine's.

    from providers.spark import Spark, SparkApplicationComponent

    etl = SparkApplicationComponent("nightly-etl", Spark(spark_conf={"spark.executor.instances": "4"},
                                    applications_path="local:///app/etl.py"), namespace="team-a")
"""

from __future__ import annotations

from providers.kubernetes.component import OperatorComponent

from .manifests import KIND, NAME_MAX, spark_application


class SparkApplicationComponent(OperatorComponent):
    """(name, config: Spark, opts=None, *, namespace, image, resources, env, labels, ttl_seconds).

    Outputs: ``ui_url`` (the operator's <name>-ui-svc on 4040). ``ttl_seconds`` becomes the
    operator's ``timeToLiveSeconds`` (none by default: a finished application stays)."""

    type_token = "taskrig:spark:SparkApplication"
    kind = KIND
    build = staticmethod(spark_application)
    name_max = NAME_MAX
    secret_maps = ("sparkConf", "hadoopConf")

    def __init__(self, name, config, opts=None, **kubernetes):
        super().__init__(name, config, opts, **kubernetes)
        self.ui_url = self._address("ui_url")
        self._finish(ui_url=self.ui_url)
