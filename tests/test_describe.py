"""`vlmwatch describe` end to end on a tiny exported model."""

import json

import cv2
import numpy as np
import pytest

from daemon.cli import main
from daemon.video.clips import read_video


def write_clip(path, frames=40, size=(96, 64)):
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.rectangle(img, (2 * i, 10), (2 * i + 15, 30), (0, 200, 255), -1)  # a box moving right
        out.write(img)
    out.release()
    return path


def run_json(capsys, *argv):
    assert main(["describe", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_video_answer_equals_transformers(tiny_reference, tmp_path, capsys):
    from reference import SYSTEM, load_hf, reference

    from daemon.engine.bundle import locate, open_model
    from daemon.engine.engine import Engine

    clip = write_clip(tmp_path / "clip.mp4")
    out = run_json(capsys, "--model", str(tiny_reference), "--system", SYSTEM, "-q", "What moves?",
                   "--max-new-tokens", "12", str(clip))
    assert out["prompt_tokens"] > 8 * 16 and out["stop_reason"] in ("stop", "length")
    assert set(out["timings"]) == {"vit_ms", "prefill_ms", "decode_ms", "tokens_per_s"}
    assert out["modelled_npu_ms"] > 8 * 364  # eight ViT calls at least
    assert out["kv"] == "copied"  # ONNX Runtime has no persistent input buffers

    hf = load_hf(tiny_reference)
    engine = Engine(open_model(locate(tiny_reference)), system=SYSTEM)
    want, n = reference(hf, engine, read_video(clip, 8), "What moves?", 12)
    assert (out["tokens"], out["prompt_tokens"]) == (want, n)


def test_json_says_the_kv_cache_is_resident_on_the_npu_runtime(axengine, tiny_model, tmp_path, capsys):
    from boards import tiny_board_layout

    root = tiny_board_layout(tmp_path / "board", tiny_model)
    argv = ["--model", str(root), "-q", "Hello?", "--max-new-tokens", "6"]
    resident, copied = run_json(capsys, *argv), run_json(capsys, *argv, "--kv", "copied")
    assert (resident["kv"], copied["kv"]) == ("resident", "copied")
    assert resident["tokens"] == copied["tokens"]
    assert resident["modelled_npu_ms"] < copied["modelled_npu_ms"]  # fewer bytes moved for the same graph calls


def test_video_frames_are_segment_midpoints(tmp_path):
    frames = read_video(write_clip(tmp_path / "clip.mp4", frames=40), 8)
    # 40 frames -> last index 39, segments of 39/8: mid-points as InternVL's get_index
    assert [f.index for f in frames] == [2, 7, 12, 17, 22, 26, 31, 36]


def test_images_with_choices(tiny_model, tmp_path, capsys):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], np.full((30, 40, 3), 60 * i, np.uint8))
    out = run_json(capsys, "--model", str(tiny_model), "-q", "Is it dark?", "--choices", "yes,no", *paths)
    assert out["stop_reason"] == "choice" and set(out["choices"]) == {"yes", "no"}
    assert out["text"] == max(out["choices"], key=out["choices"].get)
    assert out["tokens"] == []


def test_text_only_streams_the_answer(tiny_model, capsys):
    assert main(["describe", "--model", str(tiny_model), "-q", "Hello?", "--max-new-tokens", "8"]) == 0
    streamed = capsys.readouterr().out
    out = run_json(capsys, "--model", str(tiny_model), "-q", "Hello?", "--max-new-tokens", "8")
    assert streamed == out["text"] + "\n"


@pytest.mark.parametrize("argv, code, message", [
    (["-q", "x", "/nonexistent.mp4"], 2, "vlmwatch: error: /nonexistent.mp4: no such file; check the path"),
    (["-q", "x", "/"], 2, "vlmwatch: error: /: is a folder; give one video file, or image files as the frames of one"
     " window"),
    (["-q", "x", "--frames", "0"], 2, "vlmwatch: error: --frames must be at least 1, got 0"),
    (["-q", "x", "--choices", "yes"], 2,
     "vlmwatch: error: --choices needs at least two comma-separated answers, got 'yes'"),
])
def test_user_mistakes_are_one_clear_line(tiny_model, capsys, argv, code, message):
    assert main(["describe", "--model", str(tiny_model), *argv]) == code
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_missing_model_dir(tmp_path, capsys):
    assert main(["describe", "--model", str(tmp_path / "none"), "-q", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vlmwatch: error: model directory {tmp_path / 'none'} does not exist or is not a directory")


def test_corrupt_video(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    assert main(["describe", "--model", str(tiny_model), "-q", "x", str(bad)]) == 2  # the file given: a person fixes it
    assert capsys.readouterr().err.strip().startswith(f"vlmwatch: error: {bad}: cannot decode video")


def test_choices_say_which_won_with_shares_of_the_choices_next_to_the_raw_mass(tiny_model, tmp_path, capsys):
    image = str(tmp_path / "dark.png")
    cv2.imwrite(image, np.full((30, 40, 3), 20, np.uint8))
    argv = ["--model", str(tiny_model), "-q", "Is it dark?", "--choices", "yes,no", image]
    out = run_json(capsys, *argv)
    raw, shares = out["choices"], out["choices_normalised"]
    assert out["choice"] == max(raw, key=raw.get) == max(shares, key=shares.get)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["yes"] / shares["no"] == pytest.approx(raw["yes"] / raw["no"])
    assert main(["describe", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"answer: {out['choice']}"
    for line, c in zip(lines[1:3], ("yes", "no")):
        assert line == (f"  {c:<3}  {shares[c]:6.1%} of the choices  (raw {raw[c]:.4f})"
                        + ("  <- answer" if c == out["choice"] else ""))
    assert lines[3].startswith("raw: the model's probability that its answer starts with the choice;")


@pytest.mark.parametrize("names, message", [
    (["a.mp4", "b.mp4"], "give one video file at a time (got 2: {0}, {1}), or image files (.jpg, .png, ...) as the"
                         " frames of one window"),
    (["a.mp4", "b.png"], "give one video file or image files (.jpg, .png, ...), not both (got the video {0} and 1"
                         " image file(s))"),
])
def test_two_videos_or_a_video_with_images_say_so(tiny_model, tmp_path, capsys, names, message):
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.write_bytes(b"x")
    assert main(["describe", "--model", str(tiny_model), "-q", "x", *map(str, paths)]) == 2
    assert capsys.readouterr().err.strip() == "vlmwatch: error: " + message.format(*paths)
