"""OpenAI Agents tools for tasks (Flyte 2's ``flyteintegrations.openai``): ``function_tool``."""

from .agents import function_tool

__all__ = ["function_tool"]
