"""Waldur's REST API through the official ``waldur-api-client``: the catalog reader (sync)
and the usage sink (forwarding). No hand-written HTTP for Waldur's API."""
