"""The web edge: Falcon ASGI app factory, resources, body decoding; asgi.py is the entry point."""
