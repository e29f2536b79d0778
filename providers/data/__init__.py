"""``data:index:Object``: one object (or a run's folder) at the data location (``engine.data``).

What a body away from the engine needs that the image does not hold: its code bundle and its
pickled inputs, written at create, so that they are resources of the run like its cluster:
journaled, recorded, deleted at teardown and by recovery after a crash. The content is a
secret input (never in the state or the plan: the state records its URL, digest and size).
``owns`` names the folder the object stands for (the run's: the body's result and error land
there too), removed whole at delete.
"""

from __future__ import annotations

from engine import data
from engine.extend import ConfigError, Provider, ProviderRegistry


class DataObject(Provider):
    type_token = "data:index:Object"
    replace_keys = ("*",)  # another URL or content is another object
    delete_before_replace = True
    refresh_on_up = False

    def check(self, inputs: dict) -> dict:
        for key in ("url", "digest"):
            if not isinstance(inputs.get(key), str) or not inputs[key]:
                raise ConfigError(f"a data object needs a {key} (a string)", key)
        owns = inputs.get("owns")
        if owns is not None and not inputs["url"].startswith(owns.rstrip("/") + "/"):
            raise ConfigError(f"{inputs['url']} is not inside the folder it owns ({owns})", "owns")
        return inputs

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        content = inputs.get("content")
        if not isinstance(content, bytes):
            raise ConfigError("a data object's content (a secret input) must be bytes", "content")
        try:
            data.put(inputs["url"], content)
        except BaseException:
            self.delete(inputs["url"], inputs, None)  # transactional: no half-written object stays
            raise
        out = {"url": inputs["url"], "size": len(content)}
        if inputs.get("owns"):
            out["owns"] = inputs["owns"]
        return inputs["url"], out

    def read(self, id: str, inputs: dict, outputs: dict | None):
        url = (inputs or {}).get("url") or id
        return (outputs or {"url": url}) if data.exists(url) else None

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        inputs = inputs or {}
        data.remove(inputs.get("owns") or inputs.get("url") or id)


ProviderRegistry.register(DataObject)
