"""Loads the pop3mon plugin (package ``pop3mon`` in plugins/pop3mon) in this checkout.

Where pop3mon is installed (``pip install -e .``, or a wheel in the same environment), pytest
loads both plugins through their pytest11 entry points already. Declaring them here as well
would be a no-op in this repository, but an error when another project collects these tier
tests through an editable install: pytest refuses ``pytest_plugins`` in a conftest.py that is
not at its rootdir.
"""

from importlib.metadata import entry_points

if not entry_points(group="pytest11", name="pop3mon.plugin"):
    pytest_plugins = ["pop3mon.plugin", "pop3mon.report.plugin"]
