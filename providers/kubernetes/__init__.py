"""The kubernetes backend: operators' custom resources, applied with server-side apply.

One generic provider (``provider.CustomResource``) with a subclass per kind (DaskCluster,
RayCluster, SparkApplication, PyTorchJob), each manifest validated against its operator's
official CRD schema (``schema.py``, files in ``crds/``) before any call to a cluster.
Importing this package registers the providers and imports neither the ``kubernetes`` client
nor jsonschema: plugins import it at load time for free.

Settings (environment variables):
  KUBECONFIG / ENGINE_KUBECONFIG, ENGINE_K8S_CONTEXT   which cluster (else in-cluster config)
  ENGINE_K8S_NAMESPACE          namespace of new objects (default "default")
  ENGINE_K8S_TTL_SECONDS        the operators' own clean-up safety net (default 3600)
  ENGINE_K8S_READY_TIMEOUT      how long create/update wait for readiness (default 600 s)
  ENGINE_K8S_DELETE_TIMEOUT     how long delete waits for the object to go (default 120 s)
  ENGINE_K8S_CONNECT_TIMEOUT    per request connect timeout (default 5 s)
  ENGINE_K8S_CRDS               a directory of CRD YAML to validate against instead of crds/
  ENGINE_K8S_IMAGE              the task image of environments with image=None
  ENGINE_DATA_URL               where a body in a pod gets its code and inputs and leaves its
                                result (an fsspec URL: s3://, gs://, file:// on a mounted volume)

Core and apps kinds (Namespace, ServiceAccount, Secret, ConfigMap, Service, Deployment, ...)
of Pulumi programs run in-process go to ``generic.KubernetesObject``, registered as
``kubernetes:*``: the provider of every kubernetes type no operator provider registered.
"""

import providers.data  # noqa: F401  data:index:Object, the bundle and data of a body in a pod

from .generic import KubernetesObject
from .objects import Target
from .provider import KINDS, CustomResource, DaskCluster, PyTorchJob, RayCluster, SparkApplication, provider_for

__all__ = ["KINDS", "CustomResource", "DaskCluster", "KubernetesObject", "PyTorchJob", "RayCluster",
           "SparkApplication", "Target", "provider_for"]
