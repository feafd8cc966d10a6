"""Why a camera does not open, asked of the camera itself.

OpenCV only says that a capture failed. When it does, `diagnose` asks the server
directly: a TCP connect (refused, no answer, unknown host: unreachable), then one
RTSP DESCRIBE (or HTTP GET) with the URL's login, answering a Basic or Digest
challenge as FFmpeg would: 401 is unauthorized, 404 a wrong path, a reply that is
not RTSP a wrong port. RTSP is text over TCP (RFC 2326), so a socket is enough.
`stream.probe_camera` opens a camera once, as `vlmwatch check-cameras` does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

OK, UNAUTHORIZED, UNREACHABLE, NOT_VIDEO = "ok", "unauthorized", "unreachable", "not a video stream"
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # OK, UNAUTHORIZED, UNREACHABLE or NOT_VIDEO
    detail: str  # what the camera said and what to do; never holds the password

    def __str__(self) -> str:
        return f"{self.verdict}: {self.detail}"


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names


def camera_address(url: str) -> tuple[str, int]:
    """(host, TCP port) of a camera URL; ("", 0) when it has none."""
    parts = urlsplit(url)
    try:
        return parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 554)
    except ValueError:  # a port that is not a number: the open reports it
        return "", 0


def accepts(host: str, port: int, timeout: float) -> bool:
    """Whether something listens at host:port (a TCP connect, closed at once)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def diagnose(url: str, timeout: float) -> Diagnosis:
    """What the server at `url` says about its stream, within about 2 x `timeout` seconds."""
    parts = urlsplit(url)
    host, port = camera_address(url)
    where = f"{host}:{port}"
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        return Diagnosis(UNREACHABLE, f"unknown host {host!r}; check the address")
    except ConnectionRefusedError:
        return Diagnosis(UNREACHABLE, f"connection refused by {where}: nothing listens on that port; check the"
                                      " address and port, and that the camera is on")
    except (socket.timeout, TimeoutError):
        return Diagnosis(UNREACHABLE, f"no answer from {where} within {timeout:g} s; check the address and the"
                                      " network")
    except OSError as exc:
        return Diagnosis(UNREACHABLE, f"cannot connect to {where} ({exc.strerror or exc}); check the network")
    with conn:
        if parts.scheme not in ("rtsp", "http"):  # TLS: the port answers; the handshake is FFmpeg's to judge
            return Diagnosis(OK, f"{where} accepts connections")
        try:
            return _ask(conn, parts, where)
        except (OSError, ValueError) as exc:
            return Diagnosis(NOT_VIDEO, f"{where} accepts connections but did not answer as a camera"
                                        f" ({exc.__class__.__name__}); check the port")


def _ask(conn: socket.socket, parts, where: str) -> Diagnosis:
    rtsp = parts.scheme == "rtsp"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else ""
    target = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if rtsp else (parts.path or "/")
    method = "DESCRIBE" if rtsp else "GET"
    reply = _request(conn, rtsp, method, target, where, 1, None)
    if reply.status == 401 and user is not None:
        authorization = _authorization(reply.headers.get("www-authenticate", ""), method, target, user, password)
        if authorization:
            reply = _request(conn, rtsp, method, target, where, 2, authorization)
    protocol = "RTSP" if rtsp else "HTTP"
    said = f"{protocol} {reply.status} {reply.reason}".strip()
    if reply.status == 401:
        if user is None:
            return Diagnosis(UNAUTHORIZED, f"the camera requires a login ({said}); set the camera's username and"
                                           " password_env, password_file or password_credential")
        return Diagnosis(UNAUTHORIZED, f"the camera refused the login of user {user!r} ({said}); check the"
                                       " username and the password")
    if reply.status == 403:
        return Diagnosis(UNAUTHORIZED, f"user {user!r} may not watch this stream ({said}); check its rights in the"
                                       " camera's settings")
    if reply.status == 404:
        return Diagnosis(NOT_VIDEO, f"no stream at {parts.path or '/'} ({said}); check the path (the camera's"
                                    " manual or web page lists it)")
    if 200 <= reply.status < 300:
        return Diagnosis(OK, f"the camera describes the stream ({said})")
    return Diagnosis(NOT_VIDEO, f"the camera answered {said}; check the path")


def _request(conn: socket.socket, rtsp: bool, method: str, target: str, where: str, cseq: int,
             authorization: str | None) -> Reply:
    lines = [f"{method} {target} {'RTSP/1.0' if rtsp else 'HTTP/1.1'}",
             f"CSeq: {cseq}" if rtsp else f"Host: {where}", "User-Agent: vlmwatch",
             "Accept: application/sdp" if rtsp else "Accept: */*"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk or len(head) > 65536:
            break
        head += chunk
    status_line, *header_lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    match = re.match(r"(RTSP|HTTP)/\d\.\d (\d{3}) ?(.*)", status_line)
    if not match:
        raise ValueError("not an RTSP or HTTP reply")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    body = int(headers.get("content-length", "0") or 0)
    rest = len(head.split(b"\r\n\r\n", 1)[1]) if b"\r\n\r\n" in head else 0
    while rest < body and rtsp:  # read the body (SDP) so the next request starts clean
        chunk = conn.recv(body - rest)
        if not chunk:
            break
        rest += len(chunk)
    return Reply(int(match.group(2)), match.group(3), headers)


def _authorization(challenge: str, method: str, uri: str, user: str, password: str) -> str | None:
    """The Authorization header answering a Basic or Digest challenge (RFC 2617), or None."""
    scheme = challenge.split(" ", 1)[0].lower()
    if scheme == "basic":
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if scheme != "digest":
        return None
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge[len("digest"):]))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 (the protocol's hash, not ours)

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    fields = f'username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in params.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        return f'Digest {fields}, response="{response}", qop=auth, nc=00000001, cnonce="{cnonce}"'
    return f'Digest {fields}, response="{md5(f"{ha1}:{nonce}:{ha2}")}"'


def why_not_open(url: str, timeout: float) -> Diagnosis:
    """`diagnose` for a URL FFmpeg could not open: a server that is fine with us sends no video."""
    diagnosis = diagnose(url, timeout)
    if diagnosis.verdict == OK:
        return Diagnosis(NOT_VIDEO, f"{diagnosis.detail}, but FFmpeg could not read video from it; check that it"
                                    " is H.264 or H.265 video (or try the camera's other stream)")
    return diagnosis
