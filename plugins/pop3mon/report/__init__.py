"""pop3mon's reports: HTML (pytest-html 4), JUnit XML, JSON and OpenMetrics.

:mod:`.plugin` is the pytest glue (loaded from the root ``conftest.py``); :mod:`.model`
builds the one :class:`~.model.RunReport` every writer reads; :mod:`.html`, :mod:`.svg`,
:mod:`.junit`, :mod:`.json_report` and :mod:`.metrics` render it.
"""
