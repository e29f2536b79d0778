"""The fault-injection harness of issue 9. ``store`` drives the real CLI with a user's own
provider (``tasks/state_store.py``) and shows what that provider really has live; the table of
step kinds killed at every point is ``test_faults.py``, the regressions ``test_state_bugs.py``."""
