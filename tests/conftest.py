"""The suite's one conftest: it registers the fixtures' plugins (tests/harness_plugin.py, and
tests/images/images_plugin.py for the image tests)."""

pytest_plugins = ["harness_plugin", "images_plugin"]
