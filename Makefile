# Reproduce the shipped model and its figures. Run from the repository root with ../shared/data beside it.
PYTHON ?= python
TRANSLATOR ?= translator
RUN ?= runs/default
MODEL ?= models/default/model.pt

.PHONY: model evaluate-model eval-data test smoke

## Train the default model (both directions; stage 1 45 min, stage 2 6,000 steps ~19 min on 2 idle cores with bf16),
## average stage 2's best checkpoints and its last, export as fp16 and evaluate.
model:
	$(TRANSLATOR) train --config configs/default.yaml --output $(RUN)
	$(TRANSLATOR) train --config configs/default-finetune.yaml --init-from $(RUN)/best.pt --output $(RUN)-finetune
	$(TRANSLATOR) average $(RUN)-finetune/step-*.pt $(RUN)-finetune/last.pt --output $(RUN)-finetune/average.pt
	$(TRANSLATOR) export --model $(RUN)-finetune/average.pt --output $(MODEL) --dtype float16
	$(MAKE) evaluate-model

## The figures in models/default/README.md.
evaluate-model:
	$(TRANSLATOR) evaluate --model $(MODEL) --test ../shared/data/tatoeba/dev.en-ko.tsv --beam 5 --output models/default/eval/tatoeba-dev.json
	$(TRANSLATOR) evaluate --model $(MODEL) --disambiguation data/eval/disambiguation.dev.tsv --beam 5 --output models/default/eval/disambiguation-dev.json

## Rebuild data/eval/disambiguation.dev.tsv from the held-out corpus rows.
eval-data:
	$(PYTHON) data/build_eval.py

test:
	$(PYTHON) -m pytest -q

smoke:
	$(TRANSLATOR) train --config configs/smoke.yaml --output runs/smoke
