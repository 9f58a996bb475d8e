"""The domain: usage keys, the catalog snapshot, Waldur's request rules, the catalog rules
(one copy, called at intake and at commit), token signing, identifiers and the error family
whose class decides a report's fate.

Pure Python: imports nothing but the standard library, PyJWT/orjson for signing, and itself
(no framework, no adapter, no service). import-linter checks this (`make lint`).
"""
