"""Loads the pop3mon plugin (package ``pop3mon`` in plugins/pop3mon)."""

pytest_plugins = ["pop3mon.plugin", "pop3mon.report.plugin"]
