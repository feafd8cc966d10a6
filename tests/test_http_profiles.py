"""Client profiles as pure functions: what is recognised, which facts are read, how a prompt is shortened."""

from __future__ import annotations

from daemon.http.messages import Turn, parse_chat
from daemon.http.profiles import TEMPLATES, recognise, render
from clients import frigate_review, frigate_review_prompt, llmvision


def turns_of(messages) -> tuple[Turn, ...]:
    return parse_chat({"model": "m", "messages": messages}).turns


def test_frigate_review_facts_are_read_from_the_prompts_structure():
    match = recognise(turns_of(frigate_review("front_door", 3, concerns=["a ladder", "an open gate"],
                                              language="French")), 3)
    assert match.profile == "frigate-review" and match.schema is not None
    assert dict(match.facts) == {
        "camera": "front_door", "frames": "3", "start": "22:14", "duration": "48",
        "zones": "driveway, porch", "objects": "Person, Joe (person), car", "concerns": "a ladder, an open gate",
        "language": "French"}
    text = render(match, TEMPLATES["frigate-review"], lambda text: True)
    assert "front_door" in text and "a ladder, an open gate" in text and "\nAnswer in French.\n" in text


def test_lines_without_facts_are_left_out_and_lines_that_do_not_fit_are_dropped():
    match = recognise(turns_of(frigate_review("porch", 5)), 5)  # no concerns, no language
    full = render(match, TEMPLATES["frigate-review"], lambda text: True)
    assert "Also report" not in full and "Answer in" not in full and len(full.split("\n")) == 3
    first, second, third = full.split("\n")
    assert render(match, TEMPLATES["frigate-review"], lambda text: len(text) < 100) == first
    assert render(match, TEMPLATES["frigate-review"], lambda text: second not in text) == f"{first}\n{third}"
    assert render(match, TEMPLATES["frigate-review"], lambda text: False) is None


def test_llmvision_keeps_the_users_message_and_named_cameras():
    body = llmvision(3, "Is the gate open?")
    match = recognise(turns_of(body["messages"]), 3)
    assert match.profile == "llmvision" and match.schema is None
    assert dict(match.facts) == {"message": "Is the gate open?", "labels": "driveway"}


def test_frigate_object_needs_its_label_repeated():
    def turns(text):
        return (Turn("user", (text,), 3, True),)

    match = recognise(turns("Study the images containing the dog. What is the dog up to?"), 3)
    assert match.profile == "frigate-object" and match.facts == {"label": "dog"}
    assert recognise(turns("Study the images containing the dog."), 3) is None
    assert recognise((Turn("user", ("Describe these images of the dog. The dog?",), 3, False),), 3) is None


def test_other_requests_and_profiles_turned_off_are_not_matched():
    assert recognise(turns_of([{"role": "user", "content": "What is on the table?"}]), 0) is None
    messages = frigate_review("porch", 3)
    assert recognise(turns_of(messages), 3, enabled=lambda name: name != "frigate-review") is None
    assert "porch" in frigate_review_prompt("porch", 3)
