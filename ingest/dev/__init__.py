"""Developer conveniences: ``ingest run`` (runner), the embedded Redis, the demo catalog.

Never imported by the service's processes (api, workers). May import ingest.config,
ingest.bootstrap (for every adapter it needs) and ingest.services; never an adapter directly.
"""
