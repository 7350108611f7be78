"""A model folder's metadata can name only files inside that folder."""
import json
import os
import shutil

import pytest

from prompt_expander.errors import ExpanderError, ModelLoadError
from prompt_expander.model.meta import META_FILE, ModelMeta, copy_tokenizer_files


@pytest.fixture
def hostile(tiny_model_dir, tmp_path):
    folder = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, folder)
    (tmp_path / "secret_src.txt").write_text("secret\n")

    def point(name):
        meta = json.loads((folder / META_FILE).read_text())
        meta["negative_vocabulary"] = name
        (folder / META_FILE).write_text(json.dumps(meta))
        return folder
    return point


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret_src.txt", "sub/../../secret_src.txt", "."])
def test_a_path_out_of_the_folder_is_refused(hostile, name):
    folder = hostile(name)
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        ModelMeta.read(folder)
    from prompt_expander.expansion.resident import load_expander
    with pytest.raises(ExpanderError, match="outside the model folder"):
        load_expander(str(folder))


def test_a_symlink_that_leads_out_is_refused(hostile, tmp_path):
    folder = hostile("negative_vocab.txt")
    (folder / "negative_vocab.txt").unlink()
    os.symlink(tmp_path / "secret_src.txt", folder / "negative_vocab.txt")
    with pytest.raises(ModelLoadError, match="outside the model folder"):
        ModelMeta.read(folder)


def test_a_file_in_a_subfolder_is_fine(hostile):
    folder = hostile("lists/negative.txt")
    (folder / "lists").mkdir()
    (folder / "lists" / "negative.txt").write_text("blurry\nlowres\n")
    from prompt_expander.expansion.resident import load_expander
    r = load_expander(str(folder)).expand("a cat", seed=1, negative=True)
    assert set(r.added.split(", ")) <= {"blurry", "lowres"}


@pytest.mark.parametrize("meta", [{"negative_vocabulary": 5}, {"lowercase": "yes"}, ["not", "an", "object"]])
def test_malformed_metadata_is_a_clear_error(hostile, meta):
    folder = hostile("negative_vocab.txt")
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=META_FILE):
        ModelMeta.read(folder)


def test_copying_a_models_files_never_copies_from_outside(hostile, tmp_path):
    folder = hostile("../secret_src.txt")
    out = tmp_path / "out" / "deep"
    out.mkdir(parents=True)
    with pytest.raises(ModelLoadError):
        copy_tokenizer_files(folder, out)
    assert not (tmp_path / "out" / "secret_src.txt").exists()
