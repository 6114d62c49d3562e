"""HTML pages of the development identity provider: login, signed out, errors.

Every page says, in words, that this provider is for development only. Every value put into a
page goes through `html.escape`; the pages carry no script.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.responses import HTMLResponse

__all__ = ["WARNING", "login_page", "message_page"]

WARNING = "Development identity provider: not for production. There are no passwords: anyone can sign in as anyone."

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: .6rem .8rem; border-radius: 6px; }
form { margin: 1rem 0; }
input { font: inherit; padding: .4rem; width: 14rem; }
button { font: inherit; padding: .4rem .9rem; cursor: pointer; }
.users form { display: inline; margin: 0 .3rem 0 0; }
.error { color: #b00020; }
small { color: #666; }
"""

# No script, no framing; the form may post anywhere the provider then redirects to.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def login_page(*, transaction: str, client_id: str, users: Sequence[str], error: str = "") -> HTMLResponse:
    """The form posts `username` and the hidden `transaction` back to the authorize endpoint."""
    hidden = f'<input type="hidden" name="transaction" value="{escape(transaction)}">'
    picks = "".join(
        f'<form method="post" action="authorize">{hidden}'
        f'<input type="hidden" name="username" value="{escape(user)}">'
        f'<button type="submit" class="pick-user" data-user="{escape(user)}">{escape(user)}</button></form>'
        for user in users
    )
    problem = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    body = f"""
<p class="warning"><strong>{escape(WARNING)}</strong></p>
<h1>Sign in</h1>
<p>to <code>{escape(client_id)}</code></p>
{problem}
<form method="post" action="authorize">
  {hidden}
  <label for="username">User name</label><br>
  <input id="username" name="username" autocomplete="username" maxlength="64" required autofocus>
  <button type="submit" id="login-submit">Sign in</button>
</form>
<p class="users">Or pick one: {picks}</p>
<p><small>The name you type becomes your user id (<code>sub</code>) and display name.</small></p>
"""
    return _page("Sign in (development IdP)", body, status_code=400 if error else 200)


def message_page(title: str, text: str, *, status_code: int = 200) -> HTMLResponse:
    body = f'<p class="warning"><strong>{escape(WARNING)}</strong></p><h1>{escape(title)}</h1><p>{escape(text)}</p>'
    return _page(title, body, status_code=status_code)


def _page(title: str, body: str, *, status_code: int) -> HTMLResponse:
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=_HEADERS)
