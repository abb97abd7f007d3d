"""The suite's one conftest: it registers the fixtures' plugin (tests/harness_plugin.py)."""

pytest_plugins = ["harness_plugin"]
