"""Per-user usage under one component usage row ([8.x] ``set_user_usages``, bulk and
single): 201 with an empty body; a row the caller cannot see is 404, then the body is
validated, then the right to report usage is checked, as for set_usage."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import falcon

from ingest.dev.fake_waldur.formats import parse_uuid
from ingest.dev.fake_waldur.sink import send, user_of
from ingest.dev.fake_waldur.store import Store, Usage
from ingest.dev.fake_waldur.usage import FORBIDDEN, amount_error


def _item(entry: Any) -> tuple[tuple[str, Decimal] | None, dict[str, list[str]]]:
    if not isinstance(entry, dict):
        return None, {"non_field_errors": ["Invalid data. Expected a dictionary."]}
    problems: dict[str, list[str]] = {}
    username = entry.get("username")
    if username is None:
        problems["username"] = ["This field is required."]
    elif not str(username).strip():
        problems["username"] = ["This field may not be blank."]
    number, why = amount_error(entry.get("usage", 0))
    if why:
        problems["usage"] = [why]
    if entry.get("user") is not None and parse_uuid(str(entry["user"])) is None:
        problems["user"] = [f"“{entry['user']}” is not a valid UUID."]
    if problems or number is None:
        return None, problems
    return (str(username), number), {}


class UserUsages:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _row(self, req: falcon.Request, uuid: str) -> Usage | None:
        key = parse_uuid(uuid)
        row = None if key is None else self.store.usage_by_uuid(key)
        user = user_of(req)
        if row is None or not (user.sees_all() or user.provides(row.resource.offering)):
            return None
        return row

    def _apply(self, req: falcon.Request, resp: falcon.Response, uuid: str, bulk: bool) -> None:
        try:
            doc = json.loads(req.bounded_stream.read() or b"null")
        except ValueError as exc:
            send(resp, 400, {"detail": f"JSON parse error - {exc}"})
            return
        with self.store.lock:
            row = self._row(req, uuid)
            if row is None:
                send(resp, 404, {"detail": "Not found."})
                return
            if bulk:
                entries = doc.get("usages") if isinstance(doc, dict) else None
                if not isinstance(entries, list):
                    send(resp, 400, {"usages": ["This field is required."]})
                    return
                parsed = [_item(e) for e in entries]
                if any(p[1] for p in parsed):
                    send(resp, 400, {"usages": [p[1] for p in parsed]})
                    return
            else:
                one = _item(doc)
                if one[1]:
                    send(resp, 400, one[1])
                    return
                parsed = [one]
            user = user_of(req)
            if not (user.is_staff or user.provides(row.resource.offering)):
                send(resp, 403, FORBIDDEN)
                return
            for found, _ in parsed:
                assert found is not None
                row.user_usages[found[0]] = found[1]  # per username, last write wins
        send(resp, 201, None)

    def on_post_bulk(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        self._apply(req, resp, uuid, bulk=True)

    def on_post_single(self, req: falcon.Request, resp: falcon.Response, uuid: str) -> None:
        self._apply(req, resp, uuid, bulk=False)
