"""URL helpers without dependencies (the config loader uses them before any client)."""

from __future__ import annotations

import re

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs, status and ``config check``.

    Passwords are the user info's and a Sentinel URL's ``sentinel_password=`` option.
    """
    url = re.sub(r"(sentinel_password=)[^&]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, host = rest.rsplit("@", 1)
    if ":" not in creds:
        return url  # a user name alone is no secret
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
