"""What the plugins' Pulumi components share: one operator object as the child of a
``pulumi.ComponentResource``, built by the plugin's ``manifests.py`` (the function the
kubernetes backend applies), declared with ``pulumi_kubernetes``.

Run by the Pulumi CLI, the child goes to Pulumi's kubernetes provider; run by the engine
in-process, its type ``kubernetes:<group>/<version>:<Kind>`` is the token the backend's
provider for that kind registered, so the same CRD validation and readiness apply.

Differences from the backend's object, on purpose: the name is the component's (DNS-safe,
within the kind's limit), there is no run or task label (a Pulumi stack outlives runs), and
there is no time-to-live unless one is given: the backend's TTL is a safety net for a run's
ephemeral object, while a stack's object lives until the stack is destroyed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from engine.extend import ConfigError
from engine.sdk import validate_config

from .objects import Target, dns_name, image_name, is_sensitive, labels as stack_labels, prune
from .provider import provider_for


def stack_name() -> str:
    """The engine's name of the running Pulumi stack ("<project>-<stack>"), its label value."""
    return f"{pulumi.get_project()}-{pulumi.get_stack()}"


class OperatorComponent(pulumi.ComponentResource):
    """Base of the plugins' components: subclasses set ``type_token``, ``kind``, ``build``
    (the manifests.py function), ``name_max`` and, for maps whose sensitive entries must be
    Pulumi secrets, ``secret_maps`` (keys of ``spec``)."""

    type_token = ""
    kind = ""
    build: Callable[[Any, Target], dict]
    name_max = 63
    secret_maps: tuple[str, ...] = ()

    def __init__(self, name: str, config: Any, opts: Optional[pulumi.ResourceOptions] = None, *,
                 namespace: pulumi.Input[str] = "default", image: Any = None, resources: Any = None,
                 env: Optional[Mapping[str, str]] = None, labels: Optional[Mapping[str, str]] = None,
                 ttl_seconds: Optional[int] = None):
        super().__init__(self.type_token, name, None, opts)
        validate_config(config, "config")  # errors name the field path, before anything is declared
        self.object_name = dns_name(name, self.name_max)
        all_labels = {**stack_labels(stack_name(), None, None), **dict(labels or {})}
        build = type(self).build

        def manifest_in(ns: str) -> dict:
            t = Target(name=self.object_name, namespace=ns, labels=all_labels, image=image_name(image),
                       resources=resources, env=dict(env or {}), ttl_seconds=ttl_seconds)
            try:
                return prune(build(config, t))
            except ValueError as e:  # a quantity or value the object cannot carry
                raise ConfigError(f"cannot make the {self.kind} of {name!r}: {e}", "config") from None

        # A plain namespace builds now, so a bad config fails at the line that made the
        # component; an output (a Namespace resource's name) builds once it is known.
        if isinstance(namespace, str):
            self.manifest: Any = manifest_in(namespace)
            metadata, spec = self.manifest["metadata"], self._secret_spec(self.manifest["spec"])
        else:
            self.manifest = pulumi.Output.from_input(namespace).apply(manifest_in)
            metadata = self.manifest.apply(lambda m: m["metadata"])
            spec = self.manifest.apply(lambda m: self._secret_spec(m["spec"]))
        cls = provider_for(self.kind)
        self.object = CustomResource(name, api_version=f"{cls.group}/{cls.version}", kind=self.kind,
                                     metadata=metadata, spec=spec, opts=pulumi.ResourceOptions(parent=self))
        self.namespace = pulumi.Output.from_input(namespace)
        # The in-cluster addresses, as the backend's provider reports them (one source of truth);
        # through the object's URN, so whatever takes an address depends on the object.
        self.addresses = pulumi.Output.all(self.object.urn, self.namespace).apply(
            lambda a: cls().addresses(self.object_name, a[1], {}))

    def _secret_spec(self, spec: dict) -> dict:
        """Sensitive entries of the secret maps (``fs.s3a.secret.key``) as Pulumi secrets:
        encrypted in Pulumi's state, and placeholders in the engine's."""
        if not any(is_sensitive(k) for m in self.secret_maps for k in (spec.get(m) or {})):
            return spec
        spec = dict(spec)
        for m in self.secret_maps:
            if spec.get(m):
                spec[m] = {k: pulumi.Output.secret(v) if is_sensitive(k) else v for k, v in spec[m].items()}
        return spec

    def _address(self, key: str) -> pulumi.Output:
        return self.addresses.apply(lambda a: a.get(key))

    def _finish(self, **outputs: Any) -> None:
        self.register_outputs({"name": self.object_name, "namespace": self.namespace, **outputs})
