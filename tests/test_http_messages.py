"""Parsing chat requests and reading images: the pure half of the HTTP API."""

import base64

import cv2
import numpy as np
import pytest

from daemon.errors import Busy, Cancelled, PromptTooLongError
from daemon.http.images import data_url_bytes, decode_image, even_sample, image_size
from daemon.http.messages import ApiError, ResponseFormat, Turn, api_error, parse_chat


def test_text_parts_of_every_message_make_the_question_and_images_keep_their_order():
    chat = parse_chat({"model": "m", "stop": "END", "max_tokens": 30, "max_completion_tokens": 20, "seed": 4,
                       "messages": [
                           {"role": "system", "content": "Be brief."},
                           {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:a"}},
                                                        {"type": "text", "text": "What happens?"},
                                                        {"type": "image_url", "image_url": "data:b"}]}]})
    assert chat.question == "Be brief.\n\nWhat happens?"
    assert chat.images == ("data:a", "data:b")
    assert (chat.max_tokens, chat.stop, chat.seed, chat.temperature, chat.stream) == (20, ("END",), 4, None, False)


@pytest.mark.parametrize("body, message", [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
     "tools and functions are not supported"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}},
     "response_format.type 'xml' is not supported; give 'text', 'json_object' or 'json_schema'"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema must be a JSON schema object"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "the messages have no text"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0]: expected"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]},
     "stop: give at most 4"),
    ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model: String should have at least 1"),
])
def test_unsupported_or_malformed_requests_name_the_problem(body, message):
    with pytest.raises(ApiError) as err:
        parse_chat(body)
    assert err.value.status == 400 and message in err.value.message


def test_daemon_errors_map_to_openai_status_codes():
    assert api_error(PromptTooLongError("too long")).code == "context_length_exceeded"
    busy = api_error(Busy("wait", 7.2, "rate"))
    assert (busy.status, busy.code, busy.retry_after) == (429, "rate_limit_exceeded", 7.2)
    assert api_error(Busy("full", 3, "queue")).code == "queue_full"
    assert api_error(Cancelled()).status == 503
    assert api_error(RuntimeError("boom")).status == 500 and "boom" not in api_error(RuntimeError("boom")).message


def encoded(ext, h=30, w=40):
    picture = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    return picture, cv2.imencode(ext, picture)[1].tobytes()


@pytest.mark.parametrize("ext, kind", [(".png", "png"), (".jpg", "jpeg")])
def test_image_size_is_read_from_the_header(ext, kind):
    _, data = encoded(ext, 30, 40)
    assert image_size(data) == (kind, 40, 30)


def test_png_decodes_to_the_same_pixels_as_imread(tmp_path):
    picture, data = encoded(".png")
    (tmp_path / "a.png").write_bytes(data)
    decoded = decode_image(data_url_bytes("data:image/png;base64," + base64.b64encode(data).decode(), 10**6, "i"),
                           10**6, "image 1")
    assert np.array_equal(decoded, picture) and np.array_equal(decoded, cv2.imread(str(tmp_path / "a.png")))


def test_huge_pictures_are_refused_before_decoding():
    _, data = encoded(".png", 30, 40)
    with pytest.raises(ApiError, match="the image is 40x30 pixels; the limit is 1000 pixels"):
        decode_image(data, 1000, "image 1")
    lying = bytearray(data)
    lying[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # claims 10^10 pixels
    with pytest.raises(ApiError, match="100000x100000 pixels"):
        decode_image(bytes(lying), 16 * 10**6, "image 1")


@pytest.mark.parametrize("url, message", [
    ("data:image/png;base64,not base64!", "not valid base64"),
    ("data:image/png,raw", "expected a base64 data URL"),
    ("data:image/png;base64," + "A" * 4000, "the image is about 3000 bytes; the limit is 1000 bytes"),
])
def test_bad_data_urls(url, message):
    with pytest.raises(ApiError, match=message):
        data_url_bytes(url, 1000, "image 1")


@pytest.mark.parametrize("data, message", [
    (b"GIF89a....", "not a JPEG or PNG image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "without a frame header"),
])
def test_other_formats_and_damaged_files_are_refused(data, message):
    with pytest.raises(ApiError, match=message):
        decode_image(data, 10**6, "image 1")
    _, jpeg = encoded(".jpg")
    with pytest.raises(ApiError, match="cannot be decoded"):
        decode_image(jpeg[:200], 10**6, "image 1")


def test_message_shapes_and_response_formats_are_kept_for_profiles():
    chat = parse_chat({"model": "m", "response_format": {"type": "json_schema", "json_schema": {
        "name": "reply", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:a"}},
                                     {"type": "text", "text": "What happens?"}]},
        {"role": "user", "content": [{"type": "text", "text": "Image 1:"},
                                     {"type": "image_url", "image_url": {"url": "data:b"}},
                                     {"type": "text", "text": "And here?"}]}]})
    assert chat.turns == (Turn("system", ("Be brief.",), 0, True), Turn("user", ("What happens?",), 1, True),
                          Turn("user", ("Image 1:", "And here?"), 1, False))
    assert chat.response_format == ResponseFormat({"type": "object", "properties": {"n": {"type": "integer"}}},
                                                  "reply")
    json_mode = parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                            "response_format": {"type": "json_object"}})
    assert json_mode.response_format == ResponseFormat(None, "json_object")
    assert parse_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).response_format is None


def test_more_images_than_a_window_holds_are_sampled_evenly_keeping_first_and_last():
    assert even_sample(20, 8) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert even_sample(10, 8) == [0, 1, 3, 4, 5, 6, 8, 9]
    assert even_sample(5, 8) == [0, 1, 2, 3, 4]
    assert even_sample(9, 1) == [0] and even_sample(9, 2) == [0, 8] and even_sample(0, 8) == []
