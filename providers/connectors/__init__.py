"""Built-in connectors: a PostgreSQL query and a REST (HTTP) job, each a task type that the
engine runs as a ``connector:<task_type>:Job`` resource and ``engine connectors serve`` serves."""

from .http import HTTPJobConnector, HTTPJobTask
from .postgres import PostgresQueryConnector, PostgresQueryTask

__all__ = ["HTTPJobConnector", "HTTPJobTask", "PostgresQueryConnector", "PostgresQueryTask"]


def __getattr__(name: str):
    # The Pulumi component needs the pulumi extra: imported on first use, not with the connectors.
    if name == "ConnectorServiceComponent":
        from .component import ConnectorServiceComponent

        return ConnectorServiceComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
