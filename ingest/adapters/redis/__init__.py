"""The Redis side: one Redis Stream is both the durable journal of accepted reports and the
work queue the Celery workers drain (RedisQueue in journal.py, with guard.py and stats.py),
the web's pipelined accept (accept.py: AcceptPipeline), and the Lua scripts they run (*.lua,
package data, loaded by scripts.py).

Only ingest.bootstrap and the tests import this package.
"""
