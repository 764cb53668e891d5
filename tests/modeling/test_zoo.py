"""The model zoo, `resolve_model` / `load_bert_config`, and `bertwwm models`."""

from __future__ import annotations

import json
import logging
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bertwwm.modeling import zoo
from bertwwm.cli import main
from bertwwm.core.errors import UserError

pytestmark = pytest.mark.usefixtures("private_cache")


def test_zoo_lists_the_reports_models_with_their_hub_ids():
    assert {m.hub_id for m in zoo.ZOO.values()} == {
        "hfl/chinese-bert-wwm", "hfl/chinese-bert-wwm-ext", "hfl/chinese-roberta-wwm-ext",
        "hfl/chinese-roberta-wwm-ext-large", "google-bert/bert-base-chinese",
        "google-bert/bert-base-multilingual-cased"}
    large = zoo.ZOO["roberta-wwm-ext-large"]
    assert (large.layers, large.hidden, large.heads) == (24, 1024, 16)
    assert large.steps == "2M (seq 512)" and large.init == "random initialisation"
    assert zoo.ZOO["bert-wwm-ext"].steps == "1M (seq 128) + 400K (seq 512)"


@pytest.mark.parametrize("name", ["bert-wwm", "roberta-wwm-ext-large", "bert-base-multilingual-cased"])
def test_parameter_counts_match_a_real_bert_model(name):
    from transformers import BertModel

    entry = zoo.ZOO[name]
    with torch.device("meta"):  # no memory: only the shapes matter
        model = BertModel(entry.bert_config())
    assert entry.parameters == sum(p.numel() for p in model.parameters())
    assert round(zoo.ZOO["bert-wwm"].parameters / 1e6, 1) == 102.3


def test_names_and_hub_ids_resolve():
    assert zoo.hub_id_of("roberta-wwm-ext") == "hfl/chinese-roberta-wwm-ext"
    assert zoo.hub_id_of("RoBERTa-wwm-ext-large") == "hfl/chinese-roberta-wwm-ext-large"
    assert zoo.hub_id_of("roberta-wwm-large-ext") == "hfl/chinese-roberta-wwm-ext-large"  # the report's spelling
    assert zoo.hub_id_of("bert-base-chinese") == "google-bert/bert-base-chinese"
    assert zoo.hub_id_of("hfl/chinese-bert-wwm-ext") == "hfl/chinese-bert-wwm-ext"
    assert zoo.hub_id_of("someone/some-bert") == "someone/some-bert"  # other hub ids pass through
    for not_hub in ("./missing-folder", "/nowhere/chinese_wwm_L-12_H-768_A-12.zip", "a/b/c", "model.bin"):
        assert zoo.hub_id_of(not_hub) is None
        with pytest.raises(UserError, match="no such local folder"):
            zoo.resolve_model(not_hub)


# ---------------------------------------------------------------------------------- the hub, offline

OFFLINE_MESSAGE = "not in the local cache and the hub cannot be reached"


@pytest.fixture(params=["HF_HUB_OFFLINE", "closed port"])
def no_hub(request, tmp_path, monkeypatch):
    """No network for the hub: offline mode, or (probe path) an endpoint nobody listens on. Empty cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once, never leaves the host
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if request.param == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return request.param


def _fake_hub_cache(cache: Path, hub_id: str, source: Path) -> Path:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>/) holding a copy of `source`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


@pytest.mark.parametrize("ref", ["roberta-wwm-ext", "hfl/chinese-roberta-wwm-ext", "someone/some-bert"])
def test_uncached_hub_model_fails_fast_and_clearly_offline(no_hub, ref):
    started = time.perf_counter()
    with pytest.raises(UserError) as e:
        zoo.resolve_model(ref)
    assert time.perf_counter() - started <= 5  # a bound (the probe gives up after 3 s), not a timing measurement
    message = str(e.value)
    assert OFFLINE_MESSAGE in message and "download it where you are online" in message
    assert "or pass a local folder" in message and f"hf download {zoo.hub_id_of(ref)}" in message
    assert ("HF_HUB_OFFLINE is set" in message) == (no_hub == "HF_HUB_OFFLINE")
    with pytest.raises(UserError, match=OFFLINE_MESSAGE):
        zoo.load_bert_config(ref if zoo.zoo_model(ref) is None else "hfl/not-in-the-zoo")


def _verb_args(verb: str, model: str, out: Path, shared_data: Path) -> list[str]:
    # pretrain checks its data folders before the model: a folder must exist for the model check to be reached
    (out.parent / "data").mkdir(exist_ok=True)
    return {
        "fill-mask": ["fill-mask", model, "北京是中国的[MASK][MASK]。"],
        "finetune": ["finetune", "chnsenticorp", "--model", model, "--out", str(out), "--seeds", "1",
                     "--data-dir", str(shared_data / "tasks"), "--no-progress"],
        "pretrain": ["pretrain", "--recipe", "tiny-cpu", "--init", model, "--data", str(out.parent / "data"),
                     "--out", str(out), "--no-progress"],
        "convert": ["convert", "hf-to-tf", model, str(out)],
    }[verb]


@pytest.mark.parametrize("verb", ["fill-mask", "finetune", "pretrain", "convert"])
@pytest.mark.parametrize("model", ["roberta-wwm-ext", "hfl/chinese-roberta-wwm-ext"])
def test_every_verb_taking_a_model_fails_offline_before_writing(no_hub, verb, model, tmp_path, capsys,
                                                                 shared_data):
    out = tmp_path / "out"
    started = time.perf_counter()
    assert main(_verb_args(verb, model, out, shared_data)) == 2
    assert time.perf_counter() - started <= 5
    err = capsys.readouterr().err
    assert err.startswith(f"bertwwm {verb}: error: {model}: ") and OFFLINE_MESSAGE in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback, no retry chatter
    assert not out.exists()


def test_cached_hub_model_loads_offline(tmp_path, monkeypatch, capsys):
    from transformers import BertConfig, BertForMaskedLM

    from bertwwm.text.tokens import save_tokenizer

    source = tmp_path / "source"
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(str(source))
    save_tokenizer(source)
    cache = tmp_path / "hf-cache"
    snapshot = _fake_hub_cache(cache, "someone/tiny-bert", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert zoo.resolve_model("someone/tiny-bert") == str(snapshot)
    assert zoo.load_bert_config("someone/tiny-bert").hidden_size == 32
    assert main(["fill-mask", "someone/tiny-bert", "北京是中国的[MASK][MASK]。", "--top-k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    # a snapshot holding only a config (e.g. from an earlier config lookup) is not a usable model
    partial = _fake_hub_cache(cache, "someone/config-only", source)
    (partial / "model.safetensors").unlink()
    with pytest.raises(UserError, match=OFFLINE_MESSAGE):
        zoo.resolve_model("someone/config-only")


def test_a_missing_local_folder_is_said_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    (tmp_path / "runs").mkdir()
    started = time.perf_counter()
    assert main(["fill-mask", "runs/nonexistent", "北京是[MASK]。"]) == 2
    assert time.perf_counter() - started <= 5
    err = capsys.readouterr().err
    assert err.startswith("bertwwm fill-mask: error: runs/nonexistent: no such local folder (runs/ exists")
    # without runs/ here, "runs/nonexistent" could be a hub id: both readings are named
    (tmp_path / "runs").rmdir()
    assert main(["fill-mask", "runs/nonexistent", "北京是[MASK]。"]) == 2
    assert f"no such local folder, and {OFFLINE_MESSAGE}" in capsys.readouterr().err


def test_tf_folder_is_converted_once_into_the_cache(tiny_tf, tmp_path):
    cache = tmp_path / "cache"
    first = zoo.resolve_model(str(tiny_tf), cache_dir=cache)
    assert first.startswith(str(cache / "converted" / "tiny-bert-tf-"))
    stamp = (Path(first) / "model.safetensors").stat().st_mtime_ns
    assert zoo.resolve_model(str(tiny_tf / "bert_model.ckpt"), cache_dir=cache) == first  # the prefix works too
    assert (Path(first) / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not reconverted
    assert zoo.resolve_model(first, cache_dir=cache) == first  # a current folder is returned as is
    assert zoo.detect_format(first) == "hf" and zoo.detect_format(tiny_tf) == "tf"


def test_released_zip_layout_is_unpacked_and_converted(tiny_tf, tmp_path):
    from transformers import AutoModelForPreTraining

    archive = tmp_path / "chinese_wwm_L-2_H-64_A-2.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the released zips hold one top folder
        for name in ("bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"):
            zf.write(tiny_tf / name, f"chinese_wwm_L-2_H-64_A-2/{name}")
    assert zoo.detect_format(archive) == "zip"
    folder = zoo.resolve_model(str(archive), cache_dir=tmp_path / "cache")
    ref = np.load(tiny_tf / "reference_outputs.npz")
    model = AutoModelForPreTraining.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ref["input_ids"]).long(),
                    attention_mask=torch.from_numpy(ref["attention_mask"]).long(),
                    token_type_ids=torch.from_numpy(ref["token_type_ids"]).long())
    np.testing.assert_allclose(out.seq_relationship_logits.numpy(), ref["nsp_logits"], atol=1e-4, rtol=0)
    config = zoo.load_bert_config(str(archive))  # read from the zip, nothing unpacked or converted
    assert config.hidden_size == 64 and config.hidden_act == "gelu_new"
    assert not (tmp_path / "default-cache").exists()


def test_corrupt_or_foreign_files_are_errors(tiny_tf, tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(UserError, match="corrupt zip file"):
        zoo.resolve_model(str(bad), cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="corrupt zip file"):
        zoo.load_bert_config(str(bad))
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("cat.jpg", b"\xff\xd8")
    with pytest.raises(UserError, match="holds no model"):
        zoo.resolve_model(str(other), cache_dir=tmp_path / "cache")
    # .npz files are zip files too, but not model archives
    with pytest.raises(UserError, match="not a model"):
        zoo.resolve_model(str(tiny_tf / "reference_outputs.npz"), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_legacy_folder_is_converted(tmp_path):
    from transformers import BertConfig, BertForPreTraining

    from bertwwm.text.tokens import default_vocab_path

    config = BertConfig(vocab_size=21128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertForPreTraining(config)
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save({k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
                for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    (folder / "bert_config.json").write_text(json.dumps(
        {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                          "intermediate_size", "max_position_embeddings", "hidden_act")}))
    shutil.copy(default_vocab_path(), folder / "vocab.txt")
    assert zoo.detect_format(folder) == "legacy"
    resolved = zoo.resolve_model(str(folder), cache_dir=tmp_path / "cache")
    assert zoo.detect_format(resolved) == "hf"
    assert zoo.resolve_model(str(folder / "pytorch_model.bin"), cache_dir=tmp_path / "cache") == resolved
    assert zoo.load_bert_config(str(folder)).hidden_size == 16


def test_load_bert_config_reads_roberta_configs_as_bert(tmp_path, caplog):
    assert zoo.load_bert_config("roberta-wwm-ext-large").num_hidden_layers == 24  # zoo names need no download
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "vocab_size": 21128, "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "pad_token_id": 1}))
    with caplog.at_level(logging.WARNING):
        config = zoo.load_bert_config(str(folder))
    assert config.model_type == "bert" and config.pad_token_id == 0
    assert "BERT models" in caplog.text
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="not a BERT model"):
        zoo.load_bert_config(str(folder))


def test_models_verb(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for m in zoo.ZOO.values():
        assert m.hub_id in out
    assert "24/1024/16" in out
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 6 and all("parameters" in r and "obtain" in r for r in rows)
    assert main(["models", "bert-wwm-ext"]) == 0
    assert "LAMB" in capsys.readouterr().out
    assert main(["models", "no-such-model"]) == 2
