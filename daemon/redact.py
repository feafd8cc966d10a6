"""Credentials never reach a log line or a terminal: sources and messages are shown redacted.

Any source string is redacted, not only well-formed URLs: `rtsp:/admin:pw@cam/x`
(one slash) is no URL to urllib and would otherwise be shown as a file path,
password and all.
"""

from __future__ import annotations

import re

# scheme, then any number of slashes (also none or one: a mistyped URL), then user info up to the LAST '@'
_URL_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:/*)(.*)@")
_SECRET_NAME = r"([?&;][^=&;#]*(?:pass|pwd|token|key|secret|auth|sig|user|login)[^=&;#]*=)"
_SECRET_PARAM = re.compile(_SECRET_NAME + r"[^&;#]*", re.I)
_TEXT_SECRET_PARAM = re.compile(_SECRET_NAME + r"[^&;#\s'\"]*", re.I)  # in text, a value ends at a space or quote
# user:password@ inside free text (a message quoting a source): up to the last '@' before white space or a quote
_TEXT_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*:/*)[^\s'\"@]*:[^\s'\"]*@")
_URL_LIKE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):/?(?!/)")
_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "file", "rtmp", "rtmps", "ftp", "ftps", "sftp", "udp", "tcp",
                      "srt", "mms", "rtp"})


def redact_url(url: str) -> str:
    """The source with user, password and secret-looking query values replaced by ***.

    Everything up to the last '@' counts as user information, so a password
    containing '@', ':' or '/' cannot leak through a misparse."""
    url = _URL_USERINFO.sub(r"\1***@", url)
    return _SECRET_PARAM.sub(r"\1***", url)


def redact_text(text: str) -> str:
    """A message with every `scheme:[//]user:password@` in it replaced by `scheme:[//]***@`."""
    return _TEXT_SECRET_PARAM.sub(r"\1***", _TEXT_USERINFO.sub(r"\1***@", text))


def mistyped_url(source: str) -> str | None:
    """The scheme of a source that starts like a URL but lacks the '//' after 'scheme:' (`rtsp:/cam`,
    `rtsp:cam`), or None. Such a string is no URL and would be taken for a file path."""
    m = _URL_LIKE.match(source)
    return m.group(1) if m and m.group(1).lower() in _SCHEMES else None
