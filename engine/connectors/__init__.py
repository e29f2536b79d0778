"""Connectors (Flyte 2's ``flyte.connectors``): external jobs as resources in the state.

``AsyncConnector`` subclasses create, poll and delete a job in some system; a task that mixes
``AsyncConnectorExecutorMixin`` into ``engine.extend.TaskTemplate`` runs on one. The engine
records the job's ResourceMeta before it polls, resumes a crashed run's job, and cancels it on
failure, timeout and Ctrl-C. ``engine connectors serve`` offers the same connectors over
flyteidl2's gRPC services.
"""

from .base import (AsyncConnector, ConnectorJobFailed, ConnectorNotFound, ConnectorRegistry, Resource, ResourceMeta, is_terminal_phase,
                   phase_name)
from .job import ConnectorJob
from .task import AsyncConnectorExecutorMixin, TaskTemplate

__all__ = [
    "AsyncConnector", "AsyncConnectorExecutorMixin", "ConnectorJob", "ConnectorJobFailed", "ConnectorNotFound", "ConnectorRegistry",
    "Resource", "ResourceMeta", "TaskTemplate", "is_terminal_phase", "phase_name",
]
