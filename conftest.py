"""Loads the pop3mon plugin; everything else lives in plugins/pop3mon."""

pytest_plugins = ["plugins.pop3mon.plugin", "plugins.pop3mon.report.plugin"]
