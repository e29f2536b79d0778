"""``PyTorchJobComponent``: a Kubeflow PyTorchJob (elastic) as a Pulumi component, built by
``manifests.pytorch_job`` (the object the kubernetes backend applies for the same config).

    from providers.pytorch import Elastic, PyTorchJobComponent

    job = PyTorchJobComponent("pretrain", Elastic(nnodes="2:4", nproc_per_node=8),
                              namespace="team-a", image="registry.example.com/train:1.4")
"""

from __future__ import annotations

from providers.kubernetes.component import OperatorComponent

from .manifests import KIND, NAME_MAX, pytorch_job


class PyTorchJobComponent(OperatorComponent):
    """(name, config: Elastic, opts=None, *, namespace, image, resources, env, labels, ttl_seconds).

    Outputs: ``rdzv_endpoint`` and ``master_addr`` (worker 0's headless Service). The job's
    ``run_policy.ttl_seconds_after_finished``, else ``ttl_seconds``, is the operator's
    clean-up of a finished job (none by default)."""

    type_token = "taskrig:pytorch:PyTorchJob"
    kind = KIND
    build = staticmethod(pytorch_job)
    name_max = NAME_MAX

    def __init__(self, name, config, opts=None, **kubernetes):
        super().__init__(name, config, opts, **kubernetes)
        self.rdzv_endpoint = self._address("rdzv_endpoint")
        self.master_addr = self._address("master_addr")
        self._finish(rdzv_endpoint=self.rdzv_endpoint, master_addr=self.master_addr)
