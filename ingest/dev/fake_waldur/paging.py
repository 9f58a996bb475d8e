"""Waldur's LinkHeaderPagination and query parsing: bare arrays, X-Result-Count, Link."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from ingest.dev.fake_waldur.formats import is_plain_date, parse_instant, parse_uuid

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

T = TypeVar("T")


class BadQuery(Exception):
    """A 4xx answer with a DRF body."""

    def __init__(self, body: Any, status: int = 400) -> None:
        super().__init__(body)
        self.body = body
        self.status = status


class Query:
    """The query string as Django's QueryDict sees it: repeated keys kept in order."""

    def __init__(self, query_string: str) -> None:
        self.pairs = parse_qsl(query_string, keep_blank_values=True)

    def all(self, name: str) -> list[str]:
        """Repeated values and comma lists (``state=OK&state=Erred``, ``uuid_list=a,b``)."""
        out: list[str] = []
        for key, value in self.pairs:
            if key == name:
                out.extend(v for v in value.split(",") if v != "")
        return out

    def one(self, name: str) -> str | None:
        values = [v for k, v in self.pairs if k == name and v != ""]
        return values[-1] if values else None

    def uuids(self, name: str) -> set[uuid.UUID] | None:
        values = self.all(name)
        if not values:
            return None
        found = {parse_uuid(v) for v in values}
        if None in found:
            raise BadQuery({name: ["Enter a valid UUID."]})
        return {u for u in found if u is not None}

    def choices(self, name: str, allowed: Sequence[str]) -> set[str] | None:
        values = self.all(name)
        for v in values:
            if v not in allowed:
                raise BadQuery({name: [f"Select a valid choice. {v} is not one of the available choices."]})
        return set(values) or None

    def instant(self, name: str, date_only: bool = False) -> dt.datetime | None:
        value = self.one(name)
        if value is None:
            return None
        if date_only and not is_plain_date(value):
            raise BadQuery({name: ["Enter a valid date."]})
        found = parse_instant(value)
        if found is None:
            raise BadQuery({name: ["Enter a valid date/time."]})
        return found

    def fields(self) -> list[str]:
        return self.all("field")

    def without(self, name: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.pairs if k != name]


def _page_size(query: Query) -> int:
    text = query.one("page_size")
    try:
        size = int(text) if text is not None else DEFAULT_PAGE_SIZE
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)


def page(rows: Sequence[T], query: Query, url: str) -> tuple[Sequence[T], dict[str, str]]:
    """One page of ``rows`` and the headers; 404 ``Invalid page.`` past the end.

    ``url`` is the absolute request URL without its query string."""
    size = _page_size(query)
    pages = max(1, math.ceil(len(rows) / size))
    text = query.one("page") or "1"
    try:
        number = pages if text == "last" else int(text)
    except ValueError:
        raise BadQuery({"detail": "Invalid page."}, 404) from None
    if number < 1 or number > pages:
        raise BadQuery({"detail": "Invalid page."}, 404)

    grouped: dict[str, list[str]] = {}
    for key, value in query.without("page"):
        grouped.setdefault(key, []).append(value)

    def link(n: int | None) -> str:
        # DRF's replace_query_param/remove_query_param: keys sorted, repeated values kept together
        keys = grouped if n is None else {**grouped, "page": [str(n)]}
        text = urlencode(sorted(keys.items()), doseq=True)
        return f"{url}?{text}" if text else url

    links = [("first", link(None))]
    if number > 1:
        links.append(("prev", link(None if number == 2 else number - 1)))
    if number < pages:
        links.append(("next", link(number + 1)))
    links.append(("last", link(pages)))
    headers = {
        "X-Result-Count": str(len(rows)),
        "Link": ", ".join(f'<{href}>; rel="{rel}"' for rel, href in links),
    }
    return rows[(number - 1) * size : number * size], headers
