"""The `translator` command: train, translate, evaluate.

User mistakes end with one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from translator.checkpoint import CheckpointError
from translator.config import LANGUAGES, SCORE_PREFIXES, ConfigError
from translator.data import DataError
from translator.prediction import DEFAULT_MODEL
from translator.tokenizer import TokenizerError

# Errors that mean "the user asked for something impossible": one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, TokenizerError, CheckpointError, ValueError, OSError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("translator: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        print(f"translator: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="translator", description="Korean–English phrase translation toolkit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model from a YAML config",
        description="Train a model from a YAML config. Started by torchrun (torchrun --nproc_per_node=N -m translator "
                    "train ...), each process trains on its shard of the batches with DistributedDataParallel.")
    train.add_argument("--config", type=Path, help="YAML config (optional with --resume: the checkpoint's config is used)")
    train.add_argument("--resume", type=Path, help="checkpoint to continue from exactly (e.g. OUTPUT/last.pt)")
    train.add_argument("--init-from", type=Path, metavar="CKPT",
                       help="start from this checkpoint's weights and tokenizer with a fresh optimizer (fine-tuning)")
    train.add_argument("--output", type=Path, help="output directory (default: runs/NAME, or the resumed checkpoint's directory)")
    train.set_defaults(run=run_train)

    translate = commands.add_parser("translate", help="translate text arguments or stdin lines",
                                    description="Translate the TEXT arguments, or each line of stdin when none are given.")
    translate.add_argument("texts", nargs="*", metavar="TEXT")
    _model_argument(translate)
    _direction_arguments(translate, required=True)
    _search_arguments(translate)
    translate.add_argument("--n-best", type=int, default=1, help="hypotheses to return per input (<= beam)")
    translate.add_argument("--context", help="a sentence containing the text, to pick the right sense")
    translate.add_argument("--format", choices=("text", "jsonl"), default="text",
                           help="text: one translation per line (with --n-best: 'i ||| text ||| score'); jsonl: everything")
    translate.add_argument("--alignment", action="store_true", help="include attention alignments (jsonl)")
    translate.add_argument("--plot-attention", type=Path, metavar="DIR", help="write one attention heatmap PNG per input into DIR")
    translate.add_argument("--temperature", type=float, default=0.0, help="> 0 samples instead of searching")
    translate.add_argument("--top-k", type=int, default=0, help="with --temperature: sample among the k best tokens")
    translate.add_argument("--seed", type=int, help="random seed for sampling")
    translate.set_defaults(run=run_translate)

    evaluate = commands.add_parser("evaluate", help="score a model with BLEU and chrF",
                                   description="Translate a test set and score it with sacrebleu BLEU and chrF.")
    _model_argument(evaluate)
    evaluate.add_argument("--test", help="parallel test corpus (TSV english<TAB>korean, Tatoeba TSV, or prefix of .en/.ko files)")
    evaluate.add_argument("--src", help="source sentences, one per line (with --ref)")
    evaluate.add_argument("--ref", help="reference translations, one per line (with --src)")
    evaluate.add_argument("--disambiguation", metavar="FILE",
                          help="word-in-context test: TSV with header src_lang, tgt_lang, text, context, accepted "
                               "(accepted = |-separated forms); prints accuracy overall, per direction and per word")
    _direction_arguments(evaluate, required=False)
    _search_arguments(evaluate)
    evaluate.add_argument("--output", type=Path, default=Path("evaluation.json"),
                          help="JSON report (default: evaluation.json); hypotheses go beside it as NAME.SRC-TGT.hyp")
    evaluate.set_defaults(run=run_evaluate)

    export = commands.add_parser("export", help="write an inference-only (optionally fp16) copy of a checkpoint",
                                 description="Drop optimizer and training state and store weights as --dtype.")
    export.add_argument("--model", type=Path, required=True, help="checkpoint to export (e.g. runs/NAME/best.pt)")
    export.add_argument("--output", type=Path, required=True, help="where to write the exported model")
    export.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16",
                        help="storage type of the weights (default: float16)")
    export.set_defaults(run=run_export)

    average = commands.add_parser("average",
                                  help="average the weights of several checkpoints of one run (or of runs fine-tuned from one model)",
                                  description="Average the weights of checkpoints of the same run (e.g. the last "
                                              "step-*.pt files): usually a steadier model than any one of them. "
                                              "Checkpoints with identical weights count once.")
    average.add_argument("models", nargs="+", type=Path, metavar="CKPT",
                         help="two or more checkpoints with the same model config and vocabulary")
    average.add_argument("--output", type=Path, required=True, help="where to write the averaged model")
    average.set_defaults(run=run_average)

    serve = commands.add_parser("serve", help="serve translations over HTTP (gunicorn)",
                                description="Start the HTTP translation service (gunicorn with service/gunicorn_conf.py).")
    _model_argument(serve)
    serve.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on (default: 127.0.0.1:8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    serve.add_argument("--threads", type=int, help="threads per worker (default: 8)")
    serve.set_defaults(run=run_serve)
    _gradflow_parser(commands)
    return parser


def _quantize(args: argparse.Namespace) -> Optional[str]:
    return None if args.quantize in (None, "none") else args.quantize


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"checkpoint (default: {DEFAULT_MODEL})")
    parser.add_argument("--quantize", choices=("none", "int8"), type=lambda v: v.lower(),
                        help="int8: dynamically quantized LSTM/GRU and Linear layers (about 3x faster per phrase on "
                             "CPU, see benchmarks/RESULTS.md); none: float32. Default: float32, except serve: int8")


def _direction_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    note = "" if required else " (omit both to evaluate every direction the model knows)"
    parser.add_argument("--source", choices=LANGUAGES, required=required, help="source language" + note)
    parser.add_argument("--target", choices=LANGUAGES, required=required, help="target language" + note)


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy (default: 5)")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="alpha of the GNMT length penalty (default: 1.0)")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="max output length as a ratio of source length")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")


# --- train -----------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    from translator.checkpoint import load_checkpoint
    from translator.config import config_from_dict, load_config
    from translator.training import train

    if args.config is None and args.resume is None:
        raise ConfigError("train needs --config (or --resume CHECKPOINT)")
    if args.config is not None:
        config = load_config(args.config)
    else:
        config = config_from_dict(load_checkpoint(args.resume)["config"])
    output = args.output or (args.resume.parent if args.resume else Path("runs") / config.name)
    summary = train(config, output, resume=args.resume, init_from=args.init_from)
    if summary.get("rank", 0) != 0:  # under torchrun, rank 0 reports for all
        return 130 if summary["stop_reason"] == "interrupted" else 0
    final = summary["final"]
    scores = "  ".join(f"{k} {v}" for k, v in final.items() if k.startswith(SCORE_PREFIXES))
    print(f"done ({summary['stop_reason']}) after {summary['steps']} steps in {summary['minutes']} min; "
          f"dev {scores}; best {summary['best_metric']} {summary['best_score']}; checkpoints in {summary['output_dir']}")
    return 130 if summary["stop_reason"] == "interrupted" else 0


# --- translate -------------------------------------------------------------------------------------
def run_translate(args: argparse.Namespace) -> int:
    from translator.prediction import Translator

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("nothing to translate: give TEXT arguments or lines on stdin")
    translator = Translator.load(args.model, quantize=_quantize(args))
    results = translator.translate(
        texts, args.source, args.target, beam=args.beam, n_best=args.n_best, context=args.context,
        alignment=args.alignment or args.plot_attention is not None, max_ratio=args.max_ratio,
        alpha=args.length_penalty, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
        batch_size=args.batch_size,
    )
    for i, result in enumerate(results):
        if args.format == "jsonl":
            record = result.to_dict()
            if not args.alignment:
                for key in ("alignment", "source_tokens", "target_tokens"):
                    record.pop(key)
            print(json.dumps(record, ensure_ascii=False))
        elif args.n_best > 1:
            print(f"{i} ||| {result.text} ||| {result.score:.4f}")
            for alt in result.alternatives:
                print(f"{i} ||| {alt.text} ||| {alt.score:.4f}")
        else:
            print(result.text)
        if args.plot_attention is not None:
            from translator.plots import plot_attention

            plot_attention(result.alignment, result.source_tokens, result.target_tokens, args.plot_attention / f"attention-{i}.png")
    return 0


# --- export ----------------------------------------------------------------------------------------
def run_export(args: argparse.Namespace) -> int:
    from translator.checkpoint import export_checkpoint

    export_checkpoint(args.model, args.output, args.dtype)
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB, {args.dtype} weights, no training state)")
    return 0


def run_average(args: argparse.Namespace) -> int:
    from translator.checkpoint import average_checkpoints

    steps = average_checkpoints(args.models, args.output)["averaged_steps"]
    size = args.output.stat().st_size / 1e6
    listed = ", ".join(str(step) for step in steps if step is not None)
    which = f" (steps {listed})" if listed else ""
    print(f"wrote {args.output} ({size:.1f} MB, the mean of {len(steps)} checkpoints{which}, no training state)")
    return 0


# --- evaluate --------------------------------------------------------------------------------------
def run_evaluate(args: argparse.Namespace) -> int:
    from translator.evaluation import evaluate_model

    if args.disambiguation is not None:
        if args.test or args.src or args.ref:
            raise ValueError("--disambiguation cannot be combined with --test or --src/--ref")
        return run_disambiguation(args)
    if (args.source is None) != (args.target is None):
        raise ValueError("give both --source and --target, or neither")
    report = evaluate_model(
        args.model, test=args.test, src=args.src, ref=args.ref, source=args.source, target=args.target,
        beam=args.beam, alpha=args.length_penalty, max_ratio=args.max_ratio, batch_size=args.batch_size,
        output=args.output, quantize=_quantize(args),
    )
    for direction, result in report["directions"].items():
        print(f"{direction}: BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  ({result['sentences']} sentences, "
              f"{result['sentences_per_second']:.1f} sent/s)  hypotheses: {result['hypotheses']}")
        print(f"  {result['bleu_signature']}\n  {result['chrf_signature']}")
    print(f"report: {args.output}")
    return 0


def run_disambiguation(args: argparse.Namespace) -> int:
    from translator.evaluation import evaluate_disambiguation

    report = evaluate_disambiguation(args.model, args.disambiguation, beam=args.beam, output=args.output,
                                     quantize=_quantize(args))
    overall = report["overall"]
    print(f"accuracy {overall['accuracy']:.2f}% ({overall['correct']}/{overall['total']})")
    for direction, result in report["directions"].items():
        print(f"  {direction}: {result['accuracy']:.2f}% ({result['correct']}/{result['total']})")
    print("per word:")
    for word, result in report["words"].items():
        print(f"  {word}: {result['accuracy']:.1f}% ({result['correct']}/{result['total']})")
    print(f"failures ({len(report['failures'])}):")
    for failure in report["failures"]:
        print(f"  line {failure['line']} {failure['direction']} {failure['text']!r} in {failure['context']!r} → "
              f"{failure['output']!r} (accepted: {'|'.join(failure['accepted'])})")
    print(f"report: {args.output}")
    return 0


# --- gradflow --------------------------------------------------------------------------------------
# Synthetic-task options: (flag, SyntheticSettings field, type, help).
_SYNTHETIC_OPTIONS = (
    ("--cells", "cells", str, "comma-separated cells to compare"),
    ("--length", "length", int, "T: time steps; the label is the first token"),
    ("--steps", "steps", int, "training steps per cell, once without and once with clipping"),
    ("--batch-size", "batch_size", int, "sequences per training step"),
    ("--hidden", "hidden", int, "hidden units of the one recurrent layer"),
    ("--embedding", "embedding", int, "embedding size"),
    ("--classes", "classes", int, "symbols the first token is drawn from"),
    ("--lr", "learning_rate", float, "Adam learning rate"),
    ("--clip-norm", "clip_norm", float, "max global gradient norm of the clipped runs"),
    ("--seed", "seed", int, "seeds weights and data"),
)
_SALIENCY_OPTIONS = ("text", "source", "target", "context", "reference")


def _gradflow_parser(commands) -> None:
    from translator.gradflow import SyntheticSettings

    defaults = SyntheticSettings()
    gradflow = commands.add_parser(
        "gradflow", help="gradient-flow diagnostics: vanishing gradients per cell, or saliency in a model",
        description="With --synthetic: train rnn/lstm/gru briefly on a long-range recall task and measure "
                    "||dL/dh_t|| for every step t at initialisation and after training, without and with clipping "
                    "(gradflow.csv, gradflow.png, gradflow.txt). Otherwise: per-source-piece gradient saliency "
                    "||d log p(y|x)/d e(x_t)|| and encoder-state gradient norms of a translation model for one "
                    "--text (saliency.csv, saliency.png, saliency.txt).")
    gradflow.add_argument("--synthetic", action="store_true", help="run the synthetic recall task")
    for flag, name, kind, text in _SYNTHETIC_OPTIONS:
        default = getattr(defaults, name)
        shown = ",".join(default) if isinstance(default, list) else default
        gradflow.add_argument(flag, dest=name, type=kind, help=f"--synthetic: {text} (default: {shown})")
    gradflow.add_argument("--model", type=Path, help=f"checkpoint to explain (default: {DEFAULT_MODEL})")
    gradflow.add_argument("--text", help="the source text to explain")
    gradflow.add_argument("--source", choices=LANGUAGES, help="source language of --text")
    gradflow.add_argument("--target", choices=LANGUAGES, help="target language")
    gradflow.add_argument("--context", help="a sentence containing the text (as for translate)")
    gradflow.add_argument("--reference", help="the target y to explain (default: the model's own beam translation)")
    gradflow.add_argument("--beam", type=int, default=5, help="beam size of the translation explained (default: 5)")
    gradflow.add_argument("--output", type=Path, default=Path("runs") / "gradflow",
                          help="directory for the CSV, PNG and text summary (default: runs/gradflow)")
    gradflow.set_defaults(run=run_gradflow)


def run_gradflow(args: argparse.Namespace) -> int:
    from translator import gradflow

    saliency_given = [name for name in _SALIENCY_OPTIONS if getattr(args, name) is not None]
    synthetic_given = [flag for flag, name, _, _ in _SYNTHETIC_OPTIONS if getattr(args, name) is not None]
    if args.synthetic:
        if args.model is not None or saliency_given:
            extra = "--model" if args.model is not None else f"--{saliency_given[0]}"
            raise ValueError(f"{extra} explains a translation model and cannot be combined with --synthetic")
        settings = gradflow.SyntheticSettings()
        for _, name, _, _ in _SYNTHETIC_OPTIONS:
            if getattr(args, name) is not None:
                setattr(settings, name, getattr(args, name))
        if args.cells is not None:
            settings.cells = [cell.strip() for cell in args.cells.split(",") if cell.strip()]
        results = gradflow.run_synthetic(settings, args.output)
        print(gradflow.summarise(results, settings))
        print(f"wrote {args.output}/gradflow.csv, gradflow-training.csv, gradflow.png, gradflow.txt, gradflow.json")
        return 0
    if synthetic_given:
        raise ValueError(f"{synthetic_given[0]} belongs to the synthetic task: add --synthetic")
    missing = [f"--{name}" for name in ("text", "source", "target") if getattr(args, name) is None]
    if missing:
        raise ValueError(f"gradflow needs --synthetic, or {', '.join(missing)} to explain a model's translation")
    if args.beam < 1:
        raise ValueError(f"--beam must be at least 1, got {args.beam}")
    result = gradflow.saliency(args.model or DEFAULT_MODEL, args.text, args.source, args.target, context=args.context,
                               reference=args.reference, beam=args.beam)
    gradflow.write_saliency(result, args.output)
    print(result.summary())
    print(f"wrote {args.output}/saliency.csv, saliency.png, saliency.txt")
    return 0


# --- serve -----------------------------------------------------------------------------------------
def run_serve(args: argparse.Namespace) -> int:
    """Replace this process with the gunicorn master, so signals (HUP reload, TERM, Ctrl-C) reach it directly.

    The service is named by module strings only: the library never imports it.
    """
    import importlib.util
    import os

    if not args.model.is_file():
        raise CheckpointError(f"{args.model}: no such checkpoint file (train one, or pass --model PATH)")
    for name in ("workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if importlib.util.find_spec("gunicorn") is None:
        raise ValueError("gunicorn is not installed: pip install -e .")
    command = [sys.executable, "-m", "gunicorn", "--config", "python:service.gunicorn_conf", "--bind", args.bind]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    command.append("service.wsgi:app")
    environment = dict(os.environ, TRANSLATOR_MODEL=str(args.model.resolve()))
    if args.quantize is not None:  # the flag wins over an inherited TRANSLATOR_QUANTIZE
        environment["TRANSLATOR_QUANTIZE"] = args.quantize
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, environment)
    return 0  # not reached


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
