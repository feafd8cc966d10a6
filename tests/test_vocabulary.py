"""A model folder whose post graph, embedding table and tokenizer disagree on the vocabulary fails at load."""

import json
import shutil

import numpy as np
import pytest

from daemon.engine.bundle import locate, open_model
from daemon.errors import ModelError


@pytest.fixture
def copied(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("hf"))
    manifest = json.loads((folder / "manifest.json").read_text())
    return folder, folder / manifest["files"]["embeddings"]


def test_the_tiny_model_agrees_with_itself(copied):
    folder, _ = copied
    model = open_model(locate(folder))
    assert model.post.outputs(0)[0].shape[-1] == model.embeddings.shape[0]


def test_an_embedding_table_of_another_width_is_refused(copied):
    folder, table = copied
    rows = np.load(table)
    np.save(table, np.concatenate([rows, rows[:7]]))  # another model's table: 7 rows more
    with pytest.raises(ModelError, match=rf"scores {len(rows)} tokens but the embedding table .* has "
                                         rf"{len(rows) + 7} rows: the files come from different models"):
        open_model(locate(folder))


def test_a_tokenizer_with_more_tokens_than_the_table_is_refused(copied):
    folder, table = copied
    rows = np.load(table)
    tokenizer = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())
    extra = [{"id": len(rows) + i, "content": f"<extra_{i}>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in range(3)]
    tokenizer["added_tokens"] += extra
    (folder / "tokenizer" / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelError, match=rf"knows {len(rows) + 3} tokens but the embedding table .* has only "
                                         rf"{len(rows)} rows"):
        open_model(locate(folder))
