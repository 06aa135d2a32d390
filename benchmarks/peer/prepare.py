"""Convert the shared Tatoeba data into Joey NMT's format and write a Joey config for the same model.

    $PEER_VENV/bin/python benchmarks/peer/prepare.py --out /tmp/joey-koen            # data, vocab, config
    $PEER_VENV/bin/python -m joeynmt train /tmp/joey-koen/joey.yaml --skip-test      # train it

Runs with either virtualenv (the standard library, PyYAML, and sentencepiece for the vocabulary).

* Data: `english<TAB>korean` TSV → Joey's "plain" format (`train.ko`/`train.en`, `dev.ko`/`dev.en`),
  cleaned exactly as `translator` cleans it (NFKC, invisible characters dropped, whitespace collapsed,
  empty or > max_chars pairs and duplicates dropped, training pairs that are also dev pairs removed),
  so both systems see the same sentences. The dev files double as the test set (Tatoeba has no
  separate test split here).
* Vocabulary: one joint SentencePiece unigram model on both sides of the training text, trained the
  way Joey's scripts/build_vocab.py does it (Joey's special ids: unk 0, pad 1, bos 2, eos 3) with
  `hard_vocab_limit=false`; `--vocab-size` is therefore an upper bound. `vocab.txt` is its piece list.
* Config: `joey_config()` maps our YAML config (configs/benchmark-koen.yaml) onto Joey's keys: the same
  embedding and hidden sizes, layers, bidirectional LSTM encoder, Bahdanau attention with input feeding,
  bridge initialisation, tied embeddings and softmax, dropout, Adam, label smoothing, clipping.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tatoeba"
DEFAULT_CONFIG = ROOT / "configs" / "benchmark-koen.yaml"

# Joey NMT 2.3.0's default special symbols (joeynmt/config.py: _check_special_symbols).
UNK, PAD, BOS, EOS = "<unk>", "<pad>", "<s>", "</s>"
UNK_ID, PAD_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

_SPACES = re.compile(r" {2,}")


def normalize(text: str) -> str:
    """The same normalisation as translator.data.normalize (kept in sync by tests/test_benchmarks.py)."""
    text = unicodedata.normalize("NFKC", text)
    chars = []
    for char in text:
        if char.isspace():
            chars.append(" ")
        elif unicodedata.category(char) not in ("Cc", "Cf"):
            chars.append(char)
    return _SPACES.sub(" ", "".join(chars)).strip()


def read_pairs(path: Path, max_chars: int) -> list[tuple[str, str]]:
    """(english, korean) pairs of an `english<TAB>korean` file, cleaned like translator.data.clean_pairs."""
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise SystemExit(f"{path} line {number}: expected english<TAB>korean, got {len(columns)} columns")
        pair = (normalize(columns[0]), normalize(columns[1]))
        if not pair[0] or not pair[1] or max(len(pair[0]), len(pair[1])) > max_chars or pair in seen:
            continue
        seen.add(pair)
        pairs.append(pair)
    return pairs


def split_sets(train_file: Path, dev_file: Path, max_chars: int = 200) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Training pairs (minus any that are also dev pairs) and dev pairs."""
    dev = read_pairs(dev_file, max_chars)
    held_out = set(dev)
    train = [pair for pair in read_pairs(train_file, max_chars) if pair not in held_out]
    return train, dev


def write_plain(pairs: list[tuple[str, str]], prefix: Path) -> None:
    """Joey's plain format: PREFIX.en and PREFIX.ko, one sentence per line."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".en").write_text("".join(en + "\n" for en, _ in pairs), encoding="utf-8")
    prefix.with_name(prefix.name + ".ko").write_text("".join(ko + "\n" for _, ko in pairs), encoding="utf-8")


def train_vocabulary(sentences: list[str], model_prefix: Path, vocab_size: int, seed: int = 1) -> int:
    """A joint unigram SentencePiece model (Joey's build_vocab.py recipe) and Joey's vocab file; returns
    its size. hard_vocab_limit=false: a small corpus gives what it supports, at most vocab_size."""
    import sentencepiece as spm

    text_file = model_prefix.with_suffix(".txt")
    text_file.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(model_prefix), model_type="unigram", vocab_size=vocab_size,
        character_coverage=1.0, hard_vocab_limit=False, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
        pad_piece=PAD, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
        vocabulary_output_piece_score=False, num_threads=1, minloglevel=2,
    )
    text_file.unlink()
    vocab = model_prefix.with_suffix(".vocab")
    pieces = [line.split("\t")[0] for line in vocab.read_text(encoding="utf-8").splitlines()]
    vocab.with_name("vocab.txt").write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    return len(pieces)


def joey_config(ours: dict[str, Any], data_dir: Path, model_dir: Path, *, steps: Optional[int] = None,
                epochs: int = 10_000, logging_freq: int = 10, validation_freq: int = 100, beam: int = 1,
                test_batch_size: int = 64, max_output_length: int = -1, load_model: Optional[Path] = None,
                source: str = "ko", target: str = "en") -> dict[str, Any]:
    """A Joey NMT 2.3.0 config for the same model and optimiser as our config `ours` (a plain dict).

    Only settings Joey expresses are mapped; our config is checked for what this mapping assumes.
    `steps` caps the number of updates (Joey's `training.updates`); `beam` is the translate/test beam.
    """
    model, training, data = ours["model"], ours["training"], ours.get("data", {})
    checks = {
        "model.cell must be lstm or gru": model.get("cell", "lstm") in ("lstm", "gru"),
        "model.decoder_hidden must be 0 (= hidden)": model.get("decoder_hidden", 0) in (0, model["hidden"]),
        "model.residual must be false": not model.get("residual", False),
        "model.tie_embeddings and share_embeddings must agree": model.get("tie_embeddings", True) == model.get("share_embeddings", True),
        "tied embeddings need embedding == hidden": not model.get("tie_embeddings", True) or model["embedding"] == model["hidden"],
        "training.teacher_forcing must be 1.0": training.get("teacher_forcing", 1.0) == 1.0,
        "training.scheduler must be none (Joey's plateau scheduler breaks on torch 2.13)": training.get("scheduler") == "none",
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise ValueError("cannot express this config in Joey NMT: " + "; ".join(failed))
    if validation_freq % logging_freq:
        raise ValueError(f"Joey needs validation_freq ({validation_freq}) to be a multiple of logging_freq ({logging_freq})")
    if source == target:
        raise ValueError("source and target must differ")
    tied = bool(model.get("tie_embeddings", True))
    hidden, embedding = model["hidden"], model["embedding"]
    dropout = model.get("dropout", 0.3)
    embedding_dropout = model.get("embedding_dropout", 0.1)
    spm_model = (data_dir / "spm.model").as_posix()
    vocab_file = (data_dir / "vocab.txt").as_posix()

    def side(lang: str) -> dict[str, Any]:
        return {"lang": lang, "level": "bpe", "lowercase": bool(data.get("lowercase", False)), "normalize": False,
                "max_length": data.get("max_tokens", 80), "min_length": 1, "voc_file": vocab_file,
                "tokenizer_type": "sentencepiece", "tokenizer_cfg": {"model_file": spm_model}}

    training_section: dict[str, Any] = {
        "optimizer": "adam",
        "adam_betas": list(training.get("betas", [0.9, 0.999])),
        "learning_rate": training.get("learning_rate", 1e-3),
        "learning_rate_min": 1e-8,
        "weight_decay": training.get("weight_decay", 0.0),
        # Constant learning rate, like our `scheduler: none`: Joey's plateau scheduler breaks on
        # torch 2.13, and an exponential schedule with factor 1.0 never changes the rate.
        "scheduling": "exponential",
        "decrease_factor": 1.0,
        "label_smoothing": training.get("label_smoothing", 0.1),
        "normalization": "tokens",  # mean over target tokens, as ours
        "clip_grad_norm": training.get("clip_norm", 1.0) or None,
        "batch_size": 64,
        "batch_type": "sentence",
        "batch_multiplier": 1,
        "epochs": epochs,
        "early_stopping_metric": "bleu",
        "validation_freq": validation_freq,
        "logging_freq": logging_freq,
        "keep_best_ckpts": 1,
        "print_valid_sents": [],
        "shuffle": True,
        "overwrite": True,
        "use_cuda": False,
        "fp16": False,
        "num_workers": 0,
    }
    if steps is not None:
        training_section["updates"] = steps
    testing = {"n_best": 1, "beam_size": beam, "beam_alpha": 1.0, "batch_size": test_batch_size,
               "batch_type": "sentence", "max_output_length": max_output_length,
               "eval_metrics": ["bleu", "chrf"], "sacrebleu_cfg": {"tokenize": "13a"}}
    if load_model is not None:
        testing["load_model"] = Path(load_model).as_posix()
    encoder = {"type": "recurrent", "rnn_type": model.get("cell", "lstm"), "hidden_size": hidden, "bidirectional": True,
               "num_layers": model.get("encoder_layers", 2), "dropout": dropout, "freeze": False,
               "embeddings": {"embedding_dim": embedding, "scale": False, "dropout": embedding_dropout}}
    decoder = {"type": "recurrent", "rnn_type": model.get("cell", "lstm"), "hidden_size": hidden,
               "num_layers": model.get("decoder_layers", 2), "dropout": dropout, "hidden_dropout": dropout,
               "attention": model.get("attention", "bahdanau"), "input_feeding": bool(model.get("input_feeding", True)),
               "init_hidden": "bridge" if model.get("bridge", True) else "zero", "freeze": False,
               "embeddings": {"embedding_dim": embedding, "scale": False, "dropout": embedding_dropout}}
    return {
        "name": f"joey-{ours.get('name', 'model')}",
        "joeynmt_version": "2.3.0",
        "model_dir": Path(model_dir).as_posix(),
        "use_cuda": False,
        "fp16": False,
        "random_seed": training.get("seed", 1),
        "data": {
            "train": (data_dir / "train").as_posix(),
            "dev": (data_dir / "dev").as_posix(),
            "dataset_type": "plain",
            "src": side(source),
            "trg": side(target),
            "special_symbols": {"unk_token": UNK, "unk_id": UNK_ID, "pad_token": PAD, "pad_id": PAD_ID,
                                "bos_token": BOS, "bos_id": BOS_ID, "eos_token": EOS, "eos_id": EOS_ID},
        },
        "training": training_section,
        "testing": testing,
        "model": {
            "tied_embeddings": tied,
            "tied_softmax": tied,
            "encoder": encoder,
            "decoder": decoder,
        },
    }


def write_yaml(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def prepare(out: Path, data: Path = DEFAULT_DATA, vocab_size: int = 8000, max_chars: int = 200, seed: int = 1) -> dict[str, Any]:
    """Write OUT/{train,dev}.{ko,en}, OUT/spm.model and OUT/vocab.txt; return what was written.
    Reuses them when OUT/prepared.json says they were made from the same inputs."""
    train_file, dev_file = data / "train.en-ko.tsv", data / "dev.en-ko.tsv"
    for path in (train_file, dev_file):
        if not path.is_file():
            raise SystemExit(f"prepare: {path} not found (the shared Tatoeba data is expected in {data})")
    key = {"train": str(train_file.resolve()), "dev": str(dev_file.resolve()), "train_size": train_file.stat().st_size,
           "dev_size": dev_file.stat().st_size, "vocab_size": vocab_size, "max_chars": max_chars, "seed": seed}
    stamp = out / "prepared.json"
    if stamp.is_file():
        done = json.loads(stamp.read_text(encoding="utf-8"))
        if done.get("key") == key and all((out / name).is_file() for name in ("spm.model", "vocab.txt", "train.ko", "dev.ko")):
            return done
    out.mkdir(parents=True, exist_ok=True)
    train, dev = split_sets(train_file, dev_file, max_chars)
    write_plain(train, out / "train")
    write_plain(dev, out / "dev")
    size = train_vocabulary([en for en, _ in train] + [ko for _, ko in train], out / "spm", vocab_size, seed)
    done = {"key": key, "train_pairs": len(train), "dev_pairs": len(dev), "vocab_size": size}
    stamp.write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
    return done


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, vocabulary and joey.yaml")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with train.en-ko.tsv and dev.en-ko.tsv (default {DEFAULT_DATA})")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="our config whose model Joey reproduces")
    parser.add_argument("--vocab-size", type=int, default=8000, help="upper bound of the joint vocabulary (default 8000)")
    parser.add_argument("--model-dir", type=Path, help="Joey's model_dir (default OUT/model)")
    parser.add_argument("--steps", type=int, help="stop after this many updates (default: no limit; stop it with Ctrl-C)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    done = prepare(out, args.data, args.vocab_size)
    ours = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    config = write_yaml(joey_config(ours, out, (args.model_dir or out / "model").resolve(), steps=args.steps), out / "joey.yaml")
    print(f"{done['train_pairs']} training and {done['dev_pairs']} dev pairs, vocabulary {done['vocab_size']}; "
          f"config {config}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
