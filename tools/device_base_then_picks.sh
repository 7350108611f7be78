#!/usr/bin/env bash
# One device command: a base trained from scratch on the mended corpus, then as many self-distill picks from it as
# the time left allows. Each result is packed into $OUT as soon as it exists, so a command cut short still
# returns the base. Run as the twenty-eighth session did (docs/specificity.md, its section):
#
#   python -m prompt_expander prepare ../shared/data/train --out runs/data
#   mkdir -p gpu/dev && xz -6 -T2 -c runs/data/train.txt > gpu/train.txt.xz && cp runs/data/val.txt gpu/
#   cp ../shared/data/dev/*.txt gpu/dev/ && cp models/default/{word_vectors.safetensors,negative_vocab.txt} gpu/
#   mv models /tmp/models-aside    # at most 64 MiB travels to the device
#   device run, carry ["gpu"]:  BUDGET=545 TRAIN_MIN=5 bash tools/device_base_then_picks.sh
#
# BUDGET: seconds this command may take in all; TRAIN_MIN: train-base's --minutes; SIZE_ARGS: the model's shape;
# NAME: the model's folder name; DATA: the folder laid out as gpu/ above.
# Writes $OUT/NAME.log, $OUT/NAME.tar.part-* (tools/device_train.sh) and $OUT/distill.tar.
set -u
t0=$(date +%s)
left() { echo $(( ${BUDGET:-540} - ($(date +%s) - t0) )); }
nvidia-smi -L; python -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
D=${DATA:-gpu}
NAME=${NAME:-b6x512}
DATA=$D bash tools/device_train.sh $NAME ${SIZE_ARGS:---n-layer 6 --n-embd 512 --n-head 8 --vocab-size 8192} --n-positions 128 \
    --batch-size 256 --minutes ${TRAIN_MIN:-4.5} --lr 1e-3 --warmup 200 --eval-every 1000 --save-every 100000 \
    --negative-vocab $D/negative_vocab.txt || exit 1
echo "trained; $(left) s left"
M=runs/device/$NAME
cp $D/word_vectors.safetensors $M/
python - "$M/prompt_expander.json" <<'PY'
import json, sys
from prompt_expander.fileio import write_json_atomic
meta = json.load(open(sys.argv[1])); meta.update(contrast=1.0, word_vectors="word_vectors.safetensors")
write_json_atomic(sys.argv[1], meta); print(meta)
PY
mins=$(python -c "print(max(0.2, ($(left) - 60) / 60))")
echo "self-distill for $mins min"
timeout $(( $(left) > 50 ? $(left) - 20 : 30 )) python -m prompt_expander self-distill $D/train.txt --model $M --subjects 5500 \
    --candidates 8 --batch 32 --exclude $D/dev/partiprompts.txt --exclude $D/dev/imagenet_classes.txt \
    --exclude $D/dev/simple_animals.txt --minutes "$mins" --out runs/distill 2>&1 | tail -5
tar -C runs -cf "$OUT/distill.tar" distill
ls -l "$OUT"; echo "done in $(( $(date +%s) - t0 )) s"
