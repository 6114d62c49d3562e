"""The complete configurations README.md shows, as the tests run them: one place, so the
documentation cannot drift from what is tested.

Each one is the ```` ```toml ```` block right after a `<!-- config: NAME -->` line of the README
(`simplejwt`, `flask_jwt`: the token-API mode's examples, named like the test APIs' flavours), or
the ```` ```caddyfile ```` block after `<!-- config: caddyfile -->` (the repository's `Caddyfile`).
They expect their API at `README_API_ORIGIN`; `readme_config(name, api_url=...)` moves it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
README_API_ORIGIN = "http://127.0.0.1:8001"
"""Where the README's token-API examples expect the API."""
_FENCE = "```"


def readme_block(name: str, *, language: str = "toml") -> str:
    """The text of the configuration `name` (a ```` ```{language} ```` block), exactly as the
    README has it."""
    text = README.read_text(encoding="utf-8")
    marker = f"<!-- config: {name} -->\n"
    start = text.find(marker)
    if start < 0:
        raise LookupError(f"README.md has no {marker.strip()!r}")
    opening = f"{_FENCE}{language}\n"
    block = start + len(marker)
    if not text.startswith(opening, block):
        raise LookupError(f"README.md: {marker.strip()!r} is not followed by a {opening.strip()!r} block")
    body = block + len(opening)
    return text[body : text.index(f"\n{_FENCE}\n", body) + 1]


def readme_config(name: str, *, api_url: str = README_API_ORIGIN) -> dict[str, Any]:
    """The configuration `name` as a dict, with the API at `api_url`."""
    config: dict[str, Any] = _moved(tomllib.loads(readme_block(name)), api_url)
    return config


def _moved(value: Any, api_url: str) -> Any:
    if isinstance(value, str) and value.startswith(README_API_ORIGIN):
        return api_url + value.removeprefix(README_API_ORIGIN)
    if isinstance(value, dict):
        return {key: _moved(item, api_url) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item, api_url) for item in value]
    return value
