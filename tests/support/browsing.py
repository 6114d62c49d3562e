"""What the browser stand-ins of the integration and deployment tests share: reading the HTML
forms of the provider's pages, and the headers the SPA's `fetch` adds to an API call."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import urlsplit


@dataclasses.dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]
    id: str | None = None


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._inputs_by_form: dict[str, Form] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            form = Form(
                action=attributes.get("action") or "",
                method=(attributes.get("method") or "get").upper(),
                fields={},
                id=attributes.get("id"),
            )
            self.forms.append(form)
            if form.id:
                self._inputs_by_form[form.id] = form
        elif tag == "input" and self.forms:
            name = attributes.get("name")
            if name:
                # An input's `form=` attribute names the form it belongs to.
                owner = self._inputs_by_form.get(attributes.get("form") or "") or self.forms[-1]
                owner.fields[name] = attributes.get("value") or ""


def parse_forms(html: str) -> list[Form]:
    """Every `<form>` of a page with its `<input>` values."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def fetch_headers(method: str, url: str, headers: Mapping[str, str]) -> dict[str, str]:
    """What the SPA's `fetch` sends: the anti-forgery header, and its own Origin when it posts."""
    sent = {"X-CSRF": "1", **headers}
    if method.upper() not in ("GET", "HEAD"):
        parts = urlsplit(url)
        sent.setdefault("Origin", f"{parts.scheme}://{parts.netloc}")
        sent.setdefault("Sec-Fetch-Site", "same-origin")
    return sent
