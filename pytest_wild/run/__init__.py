"""A `pytest --wild` run, as `plugin.py`'s hooks hand it off: the frozen options, the suite collected as tests,
the per-process runtime, the end of the run, SIGTERM and the progress lines."""
