"""SQL (SQLAlchemy 2.x) and Redis implementations of the ports; only bootstrap imports them."""
