"""The ``ingest`` command line: one module per command family, parsed and dispatched by
``main`` (the console-script entry point is ``ingest.cli.main:main``).

``arguments`` holds the argument types, ``context`` the one error class and the runtime
accessor. Commands import ingest.config, ingest.domain, ingest.services and ingest.bootstrap
(which builds every connection); never an adapter, sqlalchemy or redis directly.
"""
