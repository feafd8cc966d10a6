"""Constrained decoding: the tiny random model's answers are JSON that conforms to the schema, always.

The model is random, so without the constraint its text is never JSON; with it, every answer must
validate (jsonschema), greedy or sampled, however little room the answer has."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from daemon.engine.bundle import locate, open_model
from daemon.engine.constrain import DEFAULT_MAX_LENGTH, JsonGrammars, bounded, min_tokens
from daemon.engine.engine import Engine, Sampling
from daemon.errors import QuestionError
from daemon.types import Frame, Prompt

REVIEW = {  # the shape of Frigate 0.17's review reply (its ReviewMetadata model), written here as a schema
    "type": "object",
    "properties": {
        "scene": {"type": "string", "maxLength": 200},
        "title": {"type": "string", "maxLength": 60},
        "shortSummary": {"type": "string", "maxLength": 120},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "potential_threat_level": {"type": "integer", "enum": [0, 1, 2]},
    },
    "required": ["scene", "title", "shortSummary", "confidence", "potential_threat_level"],
    "additionalProperties": False,
}
COUNT = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 20},
                                          "kind": {"type": "string", "enum": ["person", "car", "animal", "none"]},
                                          "notes": {"type": "array", "items": {"type": "string"}}},
         "required": ["count", "kind"]}


@pytest.fixture(scope="module")
def engine(board_model):
    return Engine(open_model(locate(board_model)), system="You watch a camera.", max_new_tokens=200)


@pytest.fixture(scope="module")
def grammars(engine):
    return JsonGrammars(engine.model.tokenizer, engine.model.embeddings.shape[0], engine.prompts.im_end)


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame("cam", float(i), i, rng.integers(0, 255, (48, 64, 3), np.uint8)) for i in range(n)]


@pytest.mark.parametrize("schema", [REVIEW, COUNT, None], ids=["review", "count", "any-object"])
@pytest.mark.parametrize("sampling", [None, Sampling(temperature=1.0, seed=7)], ids=["greedy", "sampled"])
def test_every_answer_validates(engine, grammars, schema, sampling):
    prefix = engine.prefill(frames(3), [])
    plain = engine.answer(prefix, Prompt("q", "Describe the scene as JSON.", max_new_tokens=40))
    with pytest.raises(ValueError):
        json.loads(plain.text)  # the random model alone does not write JSON
    for budget in (200, 120, min_tokens(schema)):  # the last: only the smallest value fits
        answer = engine.answer(prefix, Prompt("q", "Describe the scene as JSON.", max_new_tokens=budget),
                               sampling=sampling, constrain=grammars.start(schema))
        value = json.loads(answer.text)
        jsonschema.validate(value, bounded(schema or {"type": "object"}))
        assert len(answer.tokens) <= budget


def test_a_schema_that_cannot_be_enforced_is_refused_before_the_npu(grammars):
    with pytest.raises(QuestionError, match="cannot be enforced"):
        grammars.check({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}, 200)
    with pytest.raises(QuestionError, match="raise max_tokens to 93 or more"):
        grammars.check(REVIEW, 20)


def test_bounded_only_tightens():
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "array"},
                                               "c": {"type": "string", "maxLength": 5},
                                               "d": {"type": "string", "enum": ["x"]}}}
    props = bounded(schema)["properties"]
    assert props["a"]["maxLength"] == DEFAULT_MAX_LENGTH and props["b"]["maxItems"] > 0
    assert props["c"]["maxLength"] == 5 and "maxLength" not in props["d"]
    assert "maxLength" not in schema["properties"]["a"]  # the caller's schema is not changed
