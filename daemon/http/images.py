"""Images from requests: data URLs (or fetched http(s) URLs) -> BGR frames, within bounds.

Only JPEG and PNG are taken. The dimensions are read from the file's header
before anything is decoded, so a small file claiming a huge picture (a
decompression bomb) is refused without allocating it. Decoding is OpenCV's
`imdecode` with `IMREAD_COLOR`, the same as `cv2.imread` in `vlmwatch
describe`, so the same bytes give the same pixels on both paths.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

import numpy as np

from daemon.http.messages import ApiError

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def even_sample(n: int, most: int) -> list[int]:
    """Indices of `most` of `n` images, evenly spread in time, the first and the last kept (all when n <= most)."""
    if n <= most:
        return list(range(n))
    if most <= 1:
        return [0] if most == 1 else []
    return [round(i * (n - 1) / (most - 1)) for i in range(most)]


def bad_image(where: str, message: str) -> ApiError:
    return ApiError(400, f"{where}: {message}", code="invalid_image", param="messages")


def data_url_bytes(url: str, max_bytes: int, where: str) -> bytes:
    """The bytes of a base64 data URL, refused before decoding when they would exceed `max_bytes`."""
    m = _DATA_URL.match(url)
    if m is None:
        raise bad_image(where, "expected a base64 data URL (data:image/jpeg;base64,...)")
    payload = url[m.end():]
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise bad_image(where, f"the image is about {len(payload) * 3 // 4} bytes; the limit is {max_bytes} bytes"
                        " (http.max_image_bytes): send a smaller JPEG")
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise bad_image(where, "the data URL's payload is not valid base64") from None
    if len(data) > max_bytes:
        raise bad_image(where, f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    return data


def image_size(data: bytes) -> tuple[str, int, int]:
    """("png" | "jpeg", width, height) from the header; ValueError for anything else."""
    if data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ValueError("a damaged JPEG (no marker where one belongs)")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _SOF:
                if i + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", width, height
            if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2:i + 4])
            i += 2 + length
        raise ValueError("a JPEG without a frame header (truncated?)")
    raise ValueError("not a JPEG or PNG image")


def decode_image(data: bytes, max_pixels: int, where: str) -> np.ndarray:
    """[H, W, 3] uint8 BGR; ApiError 400 for another format, a huge picture or undecodable bytes."""
    import cv2

    try:
        kind, width, height = image_size(data)
    except ValueError as exc:
        raise bad_image(where, f"{exc}; send JPEG or PNG") from None
    if width < 1 or height < 1:
        raise bad_image(where, f"the {kind.upper()} header says {width}x{height} pixels")
    if width * height > max_pixels:
        raise bad_image(where, f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels "
                        "(http.max_image_pixels): scale it down (the model sees 448x448)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise bad_image(where, f"the {kind.upper()} data cannot be decoded (damaged or truncated)")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that lied
        raise bad_image(where, f"the image decodes to {image.shape[1]}x{image.shape[0]} pixels; the limit is "
                        f"{max_pixels}")
    return image


async def fetch_bytes(session, url: str, max_bytes: int, timeout: float, where: str) -> bytes:
    """GET an http(s) image URL with a size and time limit (http.fetch_urls on)."""
    import asyncio

    import aiohttp

    try:
        async with session.get(url, allow_redirects=True, max_redirects=3,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise bad_image(where, f"fetching the image URL gave HTTP {response.status}")
            if (response.content_length or 0) > max_bytes:
                raise bad_image(where, f"the image at the URL is {response.content_length} bytes; the limit "
                                f"is {max_bytes} bytes (http.fetch_max_bytes)")
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise bad_image(where, f"the image at the URL is over {max_bytes} bytes (http.fetch_max_bytes)")
            return bytes(data)
    except asyncio.TimeoutError:
        raise bad_image(where, f"fetching the image URL took over {timeout:g} s (http.fetch_timeout)") from None
    except aiohttp.ClientError as exc:
        raise bad_image(where, f"cannot fetch the image URL ({exc.__class__.__name__}: {exc})") from None
