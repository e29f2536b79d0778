"""The state file itself: several engines creating it at once, and one connection per process."""

import subprocess
import sys

from engine.state import State

OPEN_AND_WRITE = ("import sys; from engine.state import State; s = State(sys.argv[1]); "
                  "s.start_run(sys.argv[2], 'stack', 'task'); print('ok')")


def test_engines_creating_one_new_state_file_at_once_all_succeed(tmp_path):
    for attempt in range(5):
        path = tmp_path / f"state{attempt}.db"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, str(path), f"r{j}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in range(4)]
        results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
        assert all(rc == 0 for _, _, rc in results), [err for _, err, rc in results if rc]
        assert sorted(r["run_id"] for r in State(path).runs()) == ["r0", "r1", "r2", "r3"]


def test_shared_state_is_one_connection_per_file(tmp_path):
    a = State.shared(tmp_path / "s.db")
    a.close()  # shared: stays open for the next run in this process
    assert State.shared(tmp_path / "s.db") is a
    assert a.runs() == []
    assert State.shared(tmp_path / "other.db") is not a
