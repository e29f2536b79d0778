"""providers.openai.function_tool with the real openai-agents SDK and no network: tools are
invoked the way the SDK invokes them (on_invoke_tool with a JSON string), and an Agent runs
through Runner with a scripted implementation of the SDK's Model interface."""

import asyncio
import json

import pytest

agents = pytest.importorskip("agents")

from agents import Agent, FunctionTool, ModelResponse, RunConfig, Runner, Usage  # noqa: E402
from agents.models.interface import Model  # noqa: E402
from agents.tool import default_tool_error_function  # noqa: E402
from agents.tool_context import ToolContext  # noqa: E402
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText  # noqa: E402

from providers.openai import function_tool  # noqa: E402
from tasks import openai_tasks as t  # noqa: E402

SDK_ERROR = default_tool_error_function(None, RuntimeError("x"))


@pytest.fixture(autouse=True)
def _no_tracing(monkeypatch):
    # The SDK exports traces to OpenAI by default; these tests never reach the network.
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-used")


def invoke(tool: FunctionTool, arguments: str, call_id: str = "call_1"):
    ctx = ToolContext(context=None, tool_name=tool.name, tool_call_id=call_id, tool_arguments=arguments)
    return asyncio.run(tool.on_invoke_tool(ctx, arguments))


def test_a_task_becomes_a_function_tool_with_the_functions_schema():
    tool = t.get_weather
    assert isinstance(tool, FunctionTool)
    assert tool.name == "get_weather"
    assert tool.description == "Get the current weather for a city."
    props = tool.params_json_schema["properties"]
    assert props["city"] == {"description": "The city to look up.", "title": "City", "type": "string"}
    assert props["unit"]["default"] == "C"
    assert t.add_tool.name == "add_numbers" and set(t.add_tool.params_json_schema["properties"]) == {"a", "b"}
    # A plain function goes to the SDK's own function_tool, unchanged.
    assert isinstance(t.shout, FunctionTool) and invoke(t.shout, '{"text": "hi"}') == "HI"
    # All three spellings give the same tool.
    bare = function_tool(t.env.tasks["add"])
    called = function_tool()(t.env.tasks["add"])
    assert bare.name == called.name == "add" and bare.params_json_schema == called.params_json_schema


def test_invoking_the_tool_runs_the_task_as_a_recorded_run(engine):
    out = invoke(t.get_weather, json.dumps({"city": "Paris", "unit": "C"}))
    assert out.startswith("The weather in Paris is sunny, 22 C (run r")
    runs = engine.runs()
    assert [(r["task"], r["status"]) for r in runs] == [("openai_t.get_weather", "succeeded")]
    assert runs[0]["run_id"] in out
    assert invoke(t.add_tool, '{"a": 2, "b": 40}') == 42  # an async task
    assert engine.runs()[-1]["task"] == "openai_t.add"


def test_bad_arguments_and_failures_give_the_agent_the_sdks_error_text(engine):
    assert invoke(t.get_weather, "{not json") == SDK_ERROR
    assert invoke(t.get_weather, '{"town": "Paris"}') == SDK_ERROR  # schema violation
    assert engine.runs() == []  # nothing ran for arguments the SDK rejected
    assert invoke(t.explode, '{"reason": "boom"}') == SDK_ERROR
    runs = engine.runs()
    assert runs[-1]["status"] == "failed" and "tool failed: boom" in runs[-1]["error"]


def test_a_tool_provisions_its_environment_for_the_call(engine):
    assert invoke(t.square_sum, '{"n": 4}') == 14
    assert engine.resources() == []  # the Dask cluster was torn down after the call
    assert engine.runs()[-1]["status"] == "succeeded"


class ScriptedModel(Model):
    """The SDK's Model interface, scripted: call one tool, then answer with what it returned."""

    def __init__(self, tool_name: str, arguments: dict):
        self.tool_name, self.arguments = tool_name, arguments
        self.calls = 0
        self.tool_output = None

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs,
                           tracing, *, previous_response_id=None, conversation_id=None, prompt=None):
        self.calls += 1
        if self.calls == 1:
            assert self.tool_name in [tool.name for tool in tools]
            call = ResponseFunctionToolCall(type="function_call", id="fc_1", call_id="call_1", name=self.tool_name,
                                            arguments=json.dumps(self.arguments))
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        self.tool_output = next(i["output"] for i in input if isinstance(i, dict)
                                and i.get("type") == "function_call_output")
        text = ResponseOutputText(type="output_text", text=f"Answer: {self.tool_output}", annotations=[])
        msg = ResponseOutputMessage(type="message", id="msg_1", role="assistant", status="completed", content=[text])
        return ModelResponse(output=[msg], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError("the tests do not stream")


def test_an_agent_calls_the_task_through_runner(engine):
    model = ScriptedModel("get_weather", {"city": "Lyon", "unit": "C"})
    agent = Agent(name="weather", instructions="Use the tools.", tools=[t.get_weather, t.shout])
    result = asyncio.run(Runner.run(agent, "Weather in Lyon?", run_config=RunConfig(model=model,
                                                                                    tracing_disabled=True)))
    assert model.calls == 2
    assert result.final_output.startswith("Answer: The weather in Lyon is sunny")
    runs = engine.runs()
    assert [(r["task"], r["status"]) for r in runs] == [("openai_t.get_weather", "succeeded")]
    assert runs[0]["run_id"] in result.final_output


def test_an_agent_inside_a_task_makes_the_tool_a_child_run(engine):
    import engine as flyte

    agent_env = flyte.TaskEnvironment(name="openai_agent")

    @agent_env.task
    async def ask(city: str) -> str:
        model = ScriptedModel("get_weather", {"city": city, "unit": "F"})
        agent = Agent(name="weather", tools=[t.get_weather])
        result = await Runner.run(agent, f"Weather in {city}?", run_config=RunConfig(model=model,
                                                                                     tracing_disabled=True))
        return result.final_output

    out, run = flyte.with_runcontext(state=engine.state).run(ask, city="Oslo")
    assert "The weather in Oslo is sunny, 22 F" in out
    child = next(r for r in engine.runs() if r["task"] == "openai_t.get_weather")
    import sqlite3

    conn = sqlite3.connect(engine.state)
    parent = conn.execute("select parent_run from runs where run_id = ?", [child["run_id"]]).fetchone()[0]
    conn.close()
    assert parent == run["run_id"] and child["status"] == "succeeded"
