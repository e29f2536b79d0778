"""A task that fails with its secret inside the error, in each of the shapes libraries use, for
the redaction tests: none of them has the value as a plain ``str`` argument."""

import os
import subprocess

import engine

env = engine.TaskEnvironment(name="secret_errors",
                             secrets=[engine.Secret(key="db_password", as_env_var="DB_PASSWORD")])


class QuotesItsCredential(Exception):
    """An error whose text comes from its own ``__str__``; its args are empty."""

    def __init__(self, credential: str):
        super().__init__()
        self.credential = credential

    def __str__(self) -> str:
        return f"the server refused {self.credential}"


def error_of(kind: str, value: str) -> BaseException:
    if kind == "called_process":
        return subprocess.CalledProcessError(1, ["tool", "--token", value])
    if kind == "os_error":
        return OSError(2, "No such file", f"/x/{value}")
    if kind == "custom_str":
        return QuotesItsCredential(value)
    if kind == "dict_arg":
        return ValueError({"token": value})
    raise ValueError(f"kind: no such error kind {kind!r}")


@env.task
def fails_with(kind: str, chained: bool = False) -> None:
    error = error_of(kind, os.environ["DB_PASSWORD"])
    if chained:
        raise RuntimeError("wrapped") from error
    raise error
