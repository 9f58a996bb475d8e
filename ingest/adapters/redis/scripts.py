"""The journal's Lua scripts: each lives in its own .lua file next to this module (package
data), and is registered with a client, which knows it by SHA1 and loads it on NOSCRIPT.

AcceptPipeline sends the accept script by that same SHA (RedisQueue.accept_command) and
loads this same text (RedisQueue.accept_script) when Redis has forgotten it.
"""

from __future__ import annotations

import dataclasses
from importlib.resources import files
from typing import Any

NAMES = ("accept", "ack", "seq_floor", "find", "entry_seqs")


def source(name: str) -> str:
    """The text of ``<name>.lua``, read from the installed package."""
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class Scripts:
    """redis-py Script objects: calling one runs EVALSHA, loading the script on NOSCRIPT."""

    accept: Any
    ack: Any
    seq_floor: Any
    find: Any
    entry_seqs: Any

    @classmethod
    def register(cls, client: Any) -> Scripts:
        return cls(*(client.register_script(source(name)) for name in NAMES))
