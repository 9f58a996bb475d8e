"""The Falcon WSGI app: app factory, resources and one error-mapping table."""
