"""Providers: one package per integration and per backend. Each registers itself with the
engine's registries when imported; the engine finds them through the ``taskrig.providers``
entry-point group."""
