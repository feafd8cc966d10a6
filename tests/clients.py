"""Requests in the shape Frigate 0.17 and LLM Vision 1.7 send, for the tests (wording ours).

Read from their source: Frigate v0.17.2 frigate/genai/__init__.py (the review prompt's sections, reply keys
and fact bullets) and openai.py (one user message, images first with detail "low", then the text); LLM
Vision v1.7.0 custom_components/llmvision/providers.py, OpenAI._prepare_vision_data (a system message, a
label text before each image, the user's message last, structure as a strict json_schema named "response").
"""

from __future__ import annotations

import base64

import cv2
import numpy as np


def thumbnails(n: int) -> list[str]:
    """n JPEG thumbnails as base64, 180 px high like Frigate's preview frames."""
    rng = np.random.default_rng(n)
    pictures = (cv2.GaussianBlur(rng.integers(0, 255, (180, 320, 3), np.uint8), (9, 9), 3) for _ in range(n))
    return [base64.b64encode(cv2.imencode(".jpg", p)[1].tobytes()).decode() for p in pictures]


def image(b64: str, detail: str | None = None) -> dict:
    url = {"url": f"data:image/jpeg;base64,{b64}"}
    return {"type": "image_url", "image_url": {**url, "detail": detail} if detail else url}


def frigate_review_prompt(camera: str, n: int, concerns=(), language=None) -> str:
    """A review prompt with the structure of Frigate 0.17's (markdown sections, the reply keys in backticks,
    the event's facts as bullets, concerns as indented bullets), in our words, padded to Frigate's length."""
    guidance = "\n".join(f"- Guideline {i}: report only what the pictures show, in the order it happens, and weigh "
                         "the hour, the place and how long it lasted before judging it." for i in range(60))
    concern_lines = ("- `other_concerns` (list of strings): which of these apply:\n"
                     + "\n".join(f"    - {c}" for c in concerns)) if concerns else ""
    return f"""
Analyse these {n} pictures, oldest first, taken from the perspective of the {camera} security camera.

## What is normal here

Deliveries in daytime, residents coming and going.

## Instructions

{guidance}

## Reply

Reply with one flat JSON object holding:
- `scene` (string): what happens, start to end.
- `title` (string): a short title.
- `shortSummary` (string): two sentences for a notification.
- `confidence` (float): 0 to 1.
- `potential_threat_level` (integer): 0, 1 or 2.
{concern_lines}

## Sequence Details

- Frame 1 is the first, Frame {n} the last
- Activity started at 2026-12-05 22:14:03 and lasted 48 seconds
- Zones involved: driveway, porch

## Objects in Scene

Each line is one detection.

- Person
- Joe (person)
- car

## Notes
- Plain values only.
{f"Provide your answer in {language}" if language else ""}
"""


def frigate_review(camera: str, n: int, **facts) -> list[dict]:
    """frigate/genai/openai.py: one user message, the images first (detail "low"), then the prompt."""
    return [{"role": "user", "content": [image(t, "low") for t in thumbnails(n)]
             + [{"type": "text", "text": frigate_review_prompt(camera, n, **facts)}]}]


def llmvision(n: int, message: str, structure: dict | None = None) -> dict:
    """custom_components/llmvision/providers.py (OpenAI compatible): a system message, then one user message
    with a label text before every image and the user's message last; with response_format json and a
    structure, a json_schema response_format named "response", strict, additionalProperties false added."""
    content = []
    for i, t in enumerate(thumbnails(n)):
        content += [{"type": "text", "text": f"Image {i + 1}:" if i % 2 else "driveway:"}, image(t)]
    content.append({"type": "text", "text": message})
    system = ("Summarise the pictures for a home event log in under 255 characters. Mention people, animals and "
              "vehicles and how they move from one picture to the next; leave out what stays still; follow the "
              "user's instructions. " * 6)
    body = {"model": "internvl3-2b", "max_completion_tokens": 200, "temperature": 0.2, "top_p": 0.95,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}]}
    if structure is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "response", "schema": {**structure, "additionalProperties": False}, "strict": True}}
    return body
