"""``sk.save`` / ``sk.load``: exact round trips, rebuilt architectures, no pickle, atomic writes."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from torch import nn

import slimkit as sk
import slimkit.io.checkpoint as ckpt
from slimkit.core.errors import CheckpointError
from slimkit.core.provenance import get_edits
from slimkit.io.outputs import MARKER
from slimkit.quantize.dynamic_int8 import Int8DynamicLinear

PRUNE_INT8 = {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5}},
                        {"quantize": {"method": "dynamic_int8"}}]}


def leftovers(parent, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-") or p.name.startswith(f".{name}.old-"))


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- round trips
def test_hf_model_rebuilt_from_stored_config(make_bert, token_batch, tmp_path) -> None:
    model = make_bert()
    out = sk.save(model, tmp_path / "bert")
    assert out == (tmp_path / "bert").resolve()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "model.safetensors", "slimkit.json"]
    loaded = sk.load(out)  # no model=: rebuilt from the config stored in slimkit.json
    assert type(loaded) is type(model) and loaded is not model
    assert loaded.config.hidden_size == 32 and loaded.config.num_hidden_layers == 2
    assert not loaded.training
    assert_same_state(model, loaded)
    with torch.no_grad():
        assert torch.equal(model(**token_batch).last_hidden_state, loaded(**token_batch).last_hidden_state)


def test_plain_user_module_with_model_argument(make_mlp, tmp_path) -> None:
    model = make_mlp(seed=1)
    sk.save(model, tmp_path / "mlp")
    fresh = make_mlp(seed=2)
    assert not torch.equal(fresh.fc1.weight, model.fc1.weight)
    loaded = sk.load(tmp_path / "mlp", model=fresh)
    assert loaded is fresh
    x = torch.randn(5, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_plain_user_module_without_model_argument_raises(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "mlp")
    with pytest.raises(sk.SlimkitError) as info:
        sk.load(tmp_path / "mlp")
    assert "model=" in str(info.value)
    assert "TinyMLP" in str(info.value)


def test_pruned_and_int8_model_replays_edits(make_mlp, tmp_path) -> None:
    model = make_mlp()
    res = sk.compress(model, PRUNE_INT8, progress=False, measure=False)
    sk.save(res.model, tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "slimkit.json").read_text())
    assert [e["path"] for e in manifest["edits"]] == ["fc1", "fc2", "head"]
    assert manifest["encodings"]["fc1.weight_int8"]["encoding"] == "bitmask"  # sparse int8 stored as bitmask
    loaded = sk.load(tmp_path / "c", model=make_mlp(seed=5))
    assert all(isinstance(getattr(loaded, n), Int8DynamicLinear) for n in ("fc1", "fc2", "head"))
    assert get_edits(loaded) == get_edits(res.model)
    assert_same_state(res.model, loaded)
    x = torch.randn(7, 32)
    with torch.no_grad():
        assert torch.equal(res.model(x), loaded(x))


def test_pruned_int8_hf_model_round_trip(make_bert, token_batch, tmp_path) -> None:
    res = sk.compress(make_bert(), PRUNE_INT8, progress=False, measure=False)
    sk.save(res.model, tmp_path / "b")
    loaded = sk.load(tmp_path / "b")
    assert isinstance(loaded.encoder.layer[0].attention.self.query, Int8DynamicLinear)
    assert_same_state(res.model, loaded)
    with torch.no_grad():
        assert torch.equal(res.model(**token_batch).last_hidden_state, loaded(**token_batch).last_hidden_state)


def test_tied_embeddings_stay_tied(make_llama, token_batch, tmp_path) -> None:
    model = make_llama()
    sk.save(model, tmp_path / "llama")
    manifest = json.loads((tmp_path / "llama" / "slimkit.json").read_text())
    assert manifest["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded = sk.load(tmp_path / "llama")
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(model(**token_batch).logits, loaded(**token_batch).logits)
        loaded.model.embed_tokens.weight[0, 0] = 123.0
    assert float(loaded.lm_head.weight[0, 0].detach()) == 123.0


def test_tied_weights_stored_once(make_llama, tmp_path) -> None:
    model = make_llama()
    sk.save(model, tmp_path / "llama")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "llama" / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys


def test_load_then_save_elsewhere_round_trips(make_bert, tmp_path) -> None:
    model = make_bert()
    sk.save(model, tmp_path / "a")
    sk.save(sk.load(tmp_path / "a"), tmp_path / "b")
    assert_same_state(model, sk.load(tmp_path / "b"))


def test_manifest_contents(make_bert, tmp_path) -> None:
    res = sk.compress(make_bert(), PRUNE_INT8, progress=False, measure=False)
    sk.save(res.model, tmp_path / "m")
    manifest = ckpt.read_manifest(tmp_path / "m")
    for key in ("format_version", "base", "recipe", "edits", "encodings"):
        assert key in manifest, key
    assert manifest["format_version"] == ckpt.FORMAT_VERSION
    assert manifest["base"]["hf_class"] == "BertModel"
    assert manifest["base"]["hf_config"]["hidden_size"] == 32
    assert manifest["recipe"] == sk.Recipe.from_dict(PRUNE_INT8).to_dict()
    assert all(e["op"] == "replace_module" for e in manifest["edits"])
    assert len(manifest["edits"]) == sum(isinstance(m, Int8DynamicLinear) for m in res.model.modules())
    assert set(manifest["encodings"]) == set(res.model.state_dict())


def test_result_save_writes_report_files(make_mlp, tmp_path) -> None:
    res = sk.compress(make_mlp(), PRUNE_INT8, progress=False, example_inputs=torch.randn(2, 32), latency_runs=2,
                      eval=lambda m: 0.5)
    out = res.save(tmp_path / "r")
    names = sorted(p.name for p in out.iterdir())
    assert names == [MARKER, "model.safetensors", "report.json", "report.md", "report.png", "slimkit.json"]
    assert json.loads((out / "slimkit.json").read_text())["report"]["steps"][0]["name"] == "prune"
    assert leftovers(tmp_path, "r") == []


# ----------------------------------------------------------------------------- never unpickle
def test_torch_save_pickle_is_refused(make_mlp, tmp_path) -> None:
    model = make_mlp()
    sk.save(model, tmp_path / "p")
    torch.save(model.state_dict(), tmp_path / "p" / "model.safetensors")
    with pytest.raises(CheckpointError):
        sk.load(tmp_path / "p", model=make_mlp())


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_is_never_executed(make_mlp, tmp_path, protocol) -> None:
    model = make_mlp()
    sk.save(model, tmp_path / "p")
    marker = tmp_path / "PWNED"
    payload = pickle.dumps({"fc1.weight": _Evil(str(marker))}, protocol=protocol)
    (tmp_path / "p" / "model.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError):
        sk.load(tmp_path / "p", model=make_mlp())
    assert not marker.exists()


def test_truncated_safetensors_raises(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "t")
    path = tmp_path / "t" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        sk.load(tmp_path / "t", model=make_mlp())


@pytest.mark.parametrize("content", [b"", b"1234", b"\x08\x00\x00\x00\x00\x00\x00\x00{not json"])
def test_garbage_safetensors_raises(make_mlp, tmp_path, content) -> None:
    sk.save(make_mlp(), tmp_path / "g")
    (tmp_path / "g" / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError):
        sk.load(tmp_path / "g", model=make_mlp())


def test_missing_directory_raises(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        sk.load(tmp_path / "nowhere")


def test_directory_without_manifest_raises(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="slimkit.json"):
        sk.load(tmp_path / "empty")


def test_missing_tensor_file_raises(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    os.remove(tmp_path / "x" / "model.safetensors")
    with pytest.raises(CheckpointError):
        sk.load(tmp_path / "x", model=make_mlp())


def test_wrong_architecture_raises(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    with pytest.raises(CheckpointError):
        sk.load(tmp_path / "x", model=make_mlp(hidden=16))


def test_future_format_version_raises(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    path = tmp_path / "x" / "slimkit.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = ckpt.FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format version"):
        sk.load(tmp_path / "x", model=make_mlp())


def _edit_manifest(directory, change) -> str:  # noqa: ANN001
    """Apply ``change(manifest)`` to ``directory/slimkit.json``; returns the file's path as text."""
    path = directory / "slimkit.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return str(path)


@pytest.mark.parametrize("key", ["base", "encodings", "format_version"])
def test_manifest_missing_a_key_names_file_and_key(make_mlp, tmp_path, key) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    path = _edit_manifest(tmp_path / "x", lambda m: m.pop(key))
    with pytest.raises(CheckpointError, match=rf"{path} is malformed: key '{key}' is missing"):
        sk.load(tmp_path / "x", model=make_mlp())


def test_manifest_key_of_wrong_type_is_named(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    _edit_manifest(tmp_path / "x", lambda m: m.update(edits={"op": "x"}))
    with pytest.raises(CheckpointError, match="key 'edits' is a dict, expected list"):
        sk.load(tmp_path / "x", model=make_mlp())


def test_manifest_encoding_record_missing_a_key_is_named(make_mlp, tmp_path) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    path = _edit_manifest(tmp_path / "x", lambda m: m["encodings"]["fc1.weight"].update(encoding="bitmask"))
    with pytest.raises(CheckpointError, match=rf"{path}: encodings\['fc1.weight'\] cannot be decoded"):
        sk.load(tmp_path / "x", model=make_mlp())


@pytest.mark.parametrize("hf_class", ["NoSuchModelClass", "AutoTokenizer", "pipeline", 7])
def test_unknown_hf_class_names_file_and_value(make_bert, tmp_path, hf_class) -> None:
    sk.save(make_bert(), tmp_path / "b")
    path = _edit_manifest(tmp_path / "b", lambda m: m["base"].update(hf_class=hf_class))
    with pytest.raises(CheckpointError, match=rf"{path}: base.hf_class = {hf_class!r} is not a transformers model"):
        sk.load(tmp_path / "b")


def test_missing_hf_config_is_named(make_bert, tmp_path) -> None:
    sk.save(make_bert(), tmp_path / "b")
    _edit_manifest(tmp_path / "b", lambda m: m["base"].pop("hf_config"))
    with pytest.raises(CheckpointError, match="base.hf_config is missing"):
        sk.load(tmp_path / "b")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\"slimkit\""], ids=["garbage", "list", "string"])
def test_manifest_that_is_not_a_json_object_names_the_file(make_mlp, tmp_path, text) -> None:
    sk.save(make_mlp(), tmp_path / "x")
    (tmp_path / "x" / "slimkit.json").write_text(text)
    with pytest.raises(CheckpointError, match=str(tmp_path / "x" / "slimkit.json")):
        sk.load(tmp_path / "x", model=make_mlp())


# ----------------------------------------------------------------------------- overwriting
def _user_dir(tmp_path):  # noqa: ANN001, ANN202
    """A directory holding a user's file (and a sub-folder): slimkit must never touch it."""
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    (target / "sub" / "deep.txt").write_text("also mine")
    return target


def _assert_user_dir_intact(target) -> None:  # noqa: ANN001
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt", "sub"]
    assert (target / "keep.txt").read_text() == "mine"
    assert (target / "sub" / "deep.txt").read_text() == "also mine"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_directory_is_never_replaced(make_mlp, tmp_path, overwrite) -> None:
    target = _user_dir(tmp_path)
    with pytest.raises(CheckpointError, match=str(target)):
        sk.save(make_mlp(), target, overwrite=overwrite)
    _assert_user_dir_intact(target)
    assert leftovers(tmp_path, "out") == []


def test_a_file_is_never_replaced(make_mlp, tmp_path) -> None:
    target = tmp_path / "out"
    target.write_text("notes")
    with pytest.raises(CheckpointError, match="is a file"):
        sk.save(make_mlp(), target, overwrite=True)
    assert target.read_text() == "notes"


def test_existing_directory_refused_without_overwrite(make_mlp, tmp_path) -> None:
    target = tmp_path / "out"
    sk.save(make_mlp(seed=1), target)
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="overwrite"):
        sk.save(make_mlp(seed=2), target)
    assert (target / "model.safetensors").read_bytes() == before


def test_overwrite_replaces_a_directory_slimkit_wrote(make_mlp, tmp_path) -> None:
    target = tmp_path / "out"
    sk.save(make_mlp(seed=1), target)
    marker = json.loads((target / MARKER).read_text())
    assert marker["written_by"] == "slimkit" and marker["kind"] == "checkpoint"
    assert marker["files"] == ["model.safetensors", "slimkit.json"]
    second = make_mlp(seed=2)
    sk.save(second, target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "model.safetensors", "slimkit.json"]
    assert_same_state(second, sk.load(target, model=make_mlp(seed=3)))
    assert leftovers(tmp_path, "out") == []


def test_a_file_added_to_a_slimkit_directory_is_kept(make_mlp, tmp_path) -> None:
    """A user's file put into an old output makes it theirs too: refused, nothing touched."""
    target = tmp_path / "out"
    first = make_mlp(seed=1)
    sk.save(first, target)
    (target / "notes.md").write_text("my notes")
    with pytest.raises(CheckpointError, match="notes.md"):
        sk.save(make_mlp(seed=2), target, overwrite=True)
    assert (target / "notes.md").read_text() == "my notes"
    assert_same_state(first, sk.load(target, model=make_mlp()))


def test_a_checkpoint_from_before_the_marker_is_replaceable(make_mlp, tmp_path) -> None:
    target = tmp_path / "out"
    sk.save(make_mlp(seed=1), target)
    (target / MARKER).unlink()  # what a slimkit release without the marker wrote
    second = make_mlp(seed=2)
    sk.save(second, target, overwrite=True)
    assert (target / MARKER).is_file()
    assert_same_state(second, sk.load(target, model=make_mlp(seed=3)))


def test_saving_onto_its_own_source_is_refused(make_bert, tmp_path) -> None:
    sk.save(make_bert(), tmp_path / "src")
    loaded = sk.load(tmp_path / "src")
    before = (tmp_path / "src" / "model.safetensors").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match="loaded from"):
            sk.save(loaded, tmp_path / "src", overwrite=overwrite)
    # also after compressing the loaded model
    res = sk.compress(loaded, {"steps": [{"prune": {"sparsity": 0.5}}]}, progress=False, measure=False)
    with pytest.raises(CheckpointError):
        sk.save(res.model, tmp_path / "src", overwrite=True)
    assert (tmp_path / "src" / "model.safetensors").read_bytes() == before
    assert leftovers(tmp_path, "src") == []


def test_overwriting_a_parent_of_the_source_is_refused(make_bert, tmp_path) -> None:
    """``overwrite=True`` on a directory that contains the model's own checkpoint would delete the input."""
    sk.save(make_bert(), tmp_path / "parent" / "src")
    loaded = sk.load(tmp_path / "parent" / "src")
    with pytest.raises(CheckpointError):
        sk.save(loaded, tmp_path / "parent", overwrite=True)
    assert (tmp_path / "parent" / "src" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_failure_during_save_leaves_nothing(make_mlp, tmp_path, monkeypatch, exc) -> None:
    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise exc

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(type(exc)):
        sk.save(make_mlp(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path, "out") == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_failed_overwrite_keeps_the_old_directory(make_mlp, tmp_path, monkeypatch, exc) -> None:
    first = make_mlp(seed=1)
    sk.save(first, tmp_path / "out")

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise exc

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(type(exc)):
        sk.save(make_mlp(seed=2), tmp_path / "out", overwrite=True)
    monkeypatch.undo()
    assert_same_state(first, sk.load(tmp_path / "out", model=make_mlp()))
    assert leftovers(tmp_path, "out") == []


def test_failure_in_extra_files_leaves_nothing(make_mlp, tmp_path) -> None:
    def extra(tmp):  # noqa: ANN001, ANN202
        (tmp / "report.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.save(make_mlp(), tmp_path / "out", extra=extra)
    assert list(tmp_path.iterdir()) == []
