"""Secrets: resolved at provision time from the environment and ENGINE_SECRETS_DIR, handed to
the task as variables or as private files, named (never shown) when missing, and never written
anywhere: not in the state file, a plan, --json output, a log or an error message."""

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from conftest import TASKS, processes_under, wait_for

SEC = f"{TASKS}/secret_tasks.py"
# Distinctive values, each one searched for in everything the engine wrote or printed.
DB_PASSWORD = "pw-7Hq2ZxKe91LmN0pQ"
TOKEN = "tok-Vb83JdWq5sLz2RtY"
WANDB_KEY = "wbk" + "5c1e9a7f3b2d4e6f8a0c" + "1b3d5f7e9a2c4e6" + "0d"  # 40 characters, like a real key
VALUES = (DB_PASSWORD, TOKEN, WANDB_KEY)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def secrets_env(tmp_path, monkeypatch):
    """DB_PASSWORD from the process environment; svc/token and wandb_api_key from files in a
    secrets directory outside the folder that is searched afterwards."""
    sdir = tmp_path.parent / f"{tmp_path.name}-secrets"
    (sdir / "svc").mkdir(parents=True)
    (sdir / "svc" / "token").write_text(TOKEN + "\n")
    (sdir / "wandb_api_key").write_text(WANDB_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield {"ENGINE_SECRETS_DIR": str(sdir), "DB_PASSWORD": DB_PASSWORD}


def mounts_left(run_id: str) -> list[Path]:
    import tempfile

    return [p for base in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(base)
            for p in Path(base).glob(f"taskrig-secrets-{run_id}-*")]


def assert_nowhere(texts: list[str], folder: Path) -> None:
    for i, text in enumerate(texts):
        for v in VALUES:
            assert v not in text, f"a secret value appears in output #{i}:\n{text[:2000]}"
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "state.db" for p in files)
    for p in files:
        data = p.read_bytes()
        for v in VALUES:
            assert v.encode() not in data, f"a secret value appears in {p}"


def test_secret_values_appear_nowhere(engine, tmp_path, secrets_env):
    env = secrets_env
    out = []

    def run(*args, code=0):
        r = engine(*args, env=env)
        out.extend([r.stdout, r.stderr])
        assert r.returncode == code, r.stderr
        return r

    plan = json.loads(run("preview", f"{SEC}:uses_secrets", "--json").stdout)
    assert [s["type"] for s in plan["steps"]] == ["local:dask:Cluster"]
    doc = json.loads(run("up", f"{SEC}:uses_secrets", "--json").stdout)["outputs"]
    # The task had every value: as a variable (also shipped to a Dask worker) and as a file.
    assert doc["env_sha"] == doc["remote_sha"] == sha(DB_PASSWORD) and doc["file_sha"] == sha(TOKEN)
    assert doc["file_mode"] == "0o600" and doc["dir_mode"] == "0o700"
    assert doc["path"].endswith("/etc/flyte/secrets/svc/token") and doc["token_env"] is None
    assert not Path(doc["path"]).exists()  # removed when the body ended

    failed = json.loads(run("up", f"{SEC}:leaks_in_error", "--json", code=1).stdout)
    assert "login refused for password '[secret]'" in failed["error"]
    r = run("up", f"{SEC}:leaks_in_error", code=1)
    assert "login refused for password '[secret]'" in r.stderr  # the printed traceback too

    run("preview", f"{SEC}:wandb_with_key", "--json")
    wb = json.loads(run("up", f"{SEC}:wandb_with_key", "--json").stdout)
    assert wb["outputs"]["env_sha"] == sha(WANDB_KEY)  # the key reached W&B and the task
    assert wb["applied"][0]["inputs"]["api_key_secret"] == "wandb_api_key"  # by name only
    assert (tmp_path / "wandb").is_dir()

    run("runs", "--json")
    run("state", "list", "--json")
    runs = engine.runs()
    assert [r["status"] for r in runs] == ["succeeded", "failed", "failed", "succeeded"]
    assert "[secret]" in runs[1]["error"]
    assert_nowhere(out, tmp_path)
    assert not processes_under(tmp_path)
    assert not any(mounts_left(r["run_id"]) for r in runs)


def test_a_missing_secret_is_named_before_anything_is_provisioned(engine, tmp_path, secrets_env):
    r = engine("up", f"{SEC}:needs_missing", env=secrets_env)
    assert r.returncode == 2
    assert "secret 'vault/nowhere_to_be_found' is not set" in r.stderr
    assert "VAULT_NOWHERE_TO_BE_FOUND" in r.stderr and secrets_env["ENGINE_SECRETS_DIR"] in r.stderr
    assert not engine.state.exists() and not processes_under(tmp_path)
    r = engine("preview", f"{SEC}:needs_missing", env=secrets_env)
    assert r.returncode == 2 and "nowhere_to_be_found" in r.stderr


def test_environment_variables_win_and_group_files_are_found(engine, secrets_env, monkeypatch):
    import engine as flyte
    from engine.secrets import lookup_secret

    for k, v in secrets_env.items():
        monkeypatch.setenv(k, v)
    assert lookup_secret(flyte.Secret(key="token", group="svc")) == TOKEN  # file GROUP/KEY
    monkeypatch.setenv("SVC_TOKEN", "from-env")
    assert lookup_secret(flyte.Secret(key="token", group="svc")) == "from-env"
    assert lookup_secret(flyte.Secret(key="db_password")) == DB_PASSWORD  # DB_PASSWORD, upper case
    assert lookup_secret(flyte.Secret(key="absent")) is None
    s = flyte.Secret(key="my-token", group="team")
    assert s.env_var == "TEAM_MY_TOKEN" and flyte.Secret(key="k", mount="/etc/x").env_var is None
    with pytest.raises(Exception, match="not an environment variable name"):
        flyte.Secret(key="k", as_env_var="lower case")
    with pytest.raises(Exception, match="cannot contain '..'"):
        flyte.Secret(key="k", mount="/etc/../root")


@pytest.mark.slow
def test_a_crash_leaves_no_mounted_secret_past_the_next_command(engine, tmp_path, secrets_env):
    marker = tmp_path / "started"
    p = engine.spawn("up", f"{SEC}:mounted_then_sleep", "-i", f"marker={marker}", env=secrets_env)
    wait_for(marker.exists, 60, what="the task body to start")
    path = Path(marker.read_text())
    assert path.read_text() == TOKEN
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert path.exists()  # the dead engine could not remove it
    r = engine("up", f"{SEC}:quick", env=secrets_env)
    assert r.returncode == 0, r.stderr
    assert engine.runs()[0]["status"] == "crashed"
    assert not path.exists() and not mounts_left(engine.runs()[0]["run_id"])


def test_a_connector_secret_appears_nowhere(engine, tmp_path):
    """The HTTP job connector's bearer token (engine.Secret(key="TRAIN_TOKEN")): given to every
    connector call, kept out of the state, the plan, --json output, logs and errors."""
    pytest.importorskip("flyteidl2")
    support = pytest.importorskip("tasks.connector_support")
    token = "tok-Qm4Ew8Rt2Yu6Io0P"
    # The service (the external system) lives outside the searched folder: it is given the token.
    service = support.TrainService(tmp_path.parent / f"{tmp_path.name}-svc", epoch_seconds=0.1,
                                   token_env="TRAIN_TOKEN", env={"TRAIN_TOKEN": token})
    try:
        env = {**service.env, "TRAIN_URL": service.url, "TRAIN_TOKEN": token}
        http = f"{TASKS}/connector_http.py:train"
        out = []
        for args, code in [(("preview", http, "--json"), 0), (("up", http, "-i", "epochs=1", "--json"), 0),
                           (("up", http, "-i", "fail=true", "--json"), 1), (("up", http, "-i", "fail=true"), 1),
                           (("runs", "--json"), 0), (("state", "list", "--json"), 0)]:
            r = engine(*args, env=env)
            out.extend([r.stdout, r.stderr])
            assert r.returncode == code, r.stderr
        assert [r["status"] for r in engine.runs()] == ["succeeded", "failed", "failed"]
        assert service.stats()["posts"] == 3  # every job was created, with the token
        for text in out:
            assert token not in text
        for p in tmp_path.rglob("*"):
            if p.is_file():
                assert token.encode() not in p.read_bytes(), f"the token appears in {p}"
    finally:
        service.stop()


# ------------------------------------------------------------ errors that quote a secret
ERRORS = f"{TASKS}/secret_errors.py:fails_with"


@pytest.mark.parametrize("kind, chained, shown", [
    ("called_process", False, "CalledProcessError: Command '['tool', '--token', '[secret]']'"),
    ("os_error", False, "FileNotFoundError: [Errno 2] No such file: '/x/[secret]'"),
    ("custom_str", False, "QuotesItsCredential: the server refused [secret]"),
    ("dict_arg", False, "ValueError: {'token': '[secret]'}"),
    ("called_process", True, "RuntimeError: wrapped <- CalledProcessError: Command '['tool', '--token', '[secret]']'"),
])
def test_a_secret_inside_a_library_error_appears_nowhere(engine, tmp_path, kind, chained, shown):
    """Redaction works on the final text (the recorded line, the printed traceback, the JSON
    document), so the value's place in the exception does not matter."""
    env = {"DB_PASSWORD": DB_PASSWORD}
    args = ["-i", f"kind={kind}"] + (["-i", "chained=true"] if chained else [])
    as_json = engine("up", ERRORS, *args, "--json", env=env)
    plain = engine("up", ERRORS, *args, env=env)
    runs = engine("runs", "--json", env=env)
    assert (as_json.returncode, plain.returncode, runs.returncode) == (1, 1, 0), plain.stderr
    texts = [as_json.stdout, as_json.stderr, plain.stdout, plain.stderr, runs.stdout, runs.stderr]
    for i, text in enumerate(texts):
        assert DB_PASSWORD not in text, f"the secret appears in output #{i}:\n{text[:3000]}"
    # What was shown is the error itself, masked: the redactor ran, and on the whole chain.
    assert shown in json.loads(as_json.stdout)["error"]
    errors = [r["error"] for r in json.loads(runs.stdout)]
    assert len(errors) == 2 and all(shown in e for e in errors), errors
    assert "[secret]" in plain.stderr and "Traceback" in plain.stderr
    files = [p for p in (tmp_path / ".engine").rglob("*") if p.is_file()]
    assert engine.state in files
    for p in files:
        assert DB_PASSWORD.encode() not in p.read_bytes(), f"the secret appears in {p}"


def test_redaction_finds_a_value_however_it_was_quoted():
    """A value with quotes, a backslash and non-ASCII letters reads differently inside a
    repr (a list argument), a JSON document, and a repr inside JSON: each form is masked."""
    import subprocess

    from engine.secrets import error_text, redact_text, register

    value = "p'w\"\\ünïcode-Zq81"
    register([value])
    e = subprocess.CalledProcessError(1, ["tool", value])
    for text in (str(e), json.dumps({"e": value}), json.dumps({"e": str(e)}),
                 json.dumps({"e": value}, ensure_ascii=False), repr({"k": value})):
        assert value not in text  # quoted: a search for the value as given would miss it
        masked = redact_text(text)
        assert "[secret]" in masked and "ünïcode" not in masked and "\\u00fc" not in masked, (text, masked)
    chained = RuntimeError("outer")
    chained.__cause__ = OSError(2, "No such file", f"/k/{value}")
    assert error_text(chained) == "RuntimeError: outer <- FileNotFoundError: [Errno 2] No such file: '/k/[secret]'"


# ------------------------------------------------------------ the digest of a secret
def test_the_digest_key_lives_outside_the_state_and_keys_the_digest(tmp_path, monkeypatch):
    import stat

    from engine.errors import ConfigError
    from engine.secrets import secret_digest, secret_placeholder

    cfg = tmp_path / "cfg" / "taskrig"
    monkeypatch.setenv("TASKRIG_CONFIG_DIR", str(cfg))
    short = "hunter2"  # short enough to find from a bare hash by trying guesses
    first = secret_placeholder(short)
    key = cfg / "hmac.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cfg.stat().st_mode) == 0o700
    assert len(key.read_bytes()) == 32
    assert first == secret_placeholder(short) and first.startswith("(secret hmac:") and short not in first
    assert sha(short)[:16] not in first and sha(short)[:16] not in secret_digest(short)
    assert secret_placeholder("hunter3") != first

    monkeypatch.setenv("TASKRIG_CONFIG_DIR", str(tmp_path / "other"))
    assert secret_placeholder(short) != first  # another key, another digest

    monkeypatch.setenv("TASKRIG_CONFIG_DIR", str(tmp_path / "loose"))
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "hmac.key").write_bytes(os.urandom(32))
    os.chmod(tmp_path / "loose" / "hmac.key", 0o644)
    with pytest.raises(ConfigError, match=r"loose/hmac.key is readable by others \(mode 644\)"):
        secret_digest(short)


def test_the_key_falls_back_to_the_xdg_config_folder(tmp_path, monkeypatch):
    from engine.secrets import config_dir

    monkeypatch.delenv("TASKRIG_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "taskrig"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "taskrig"


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "TASKRIG_CONFIG_DIR": str(tmp_path / "race")}
    code = "import engine.secrets as s; print(s.secret_digest('same-value'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    digests = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(digests) == 1 and len(next(iter(digests))) == 64
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == ["hmac.key"]  # no temporary file left
