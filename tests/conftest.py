"""The suite's one conftest: it registers the fixtures' plugins (tests/harness_plugin.py, and
tests/images/images_plugin.py for the image tests, tests/procs_guard.py: a test that starts a
process carries the `procs` marker)."""

pytest_plugins = ["harness_plugin", "images_plugin", "procs_guard"]
