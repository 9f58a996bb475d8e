"""The services: intake (the request path), commit and drain (the worker path), operations
(status, replay, stats), access and the catalog cache, written against the ports in
``ports.py``.

Imports the domain and the ports only: never an adapter, a framework or ``ingest.bootstrap``
(import-linter checks it). ``ingest.bootstrap`` builds the adapters and hands them in.
"""
