"""Credentials never reach a log line or a terminal: URLs are shown redacted.
"""

from __future__ import annotations

import re

_URL_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(.*)@")  # greedy: up to the last '@'
_SECRET_PARAM = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|token|key|secret|auth|sig|user|login)[^=&;#]*=)[^&;#]*", re.I)


def redact_url(url: str) -> str:
    """The URL with user, password and secret-looking query values replaced by ***.

    Everything up to the last '@' counts as user information, so a password
    containing '@', ':' or '/' cannot leak through a misparse."""
    url = _URL_USERINFO.sub(r"\1***@", url)
    return _SECRET_PARAM.sub(r"\1***", url)
