#!/usr/bin/env bash
# Train one base model on the lent GPU machine and pack it into $OUT in parts that the device tool returns.
#
#   bash tools/device_train.sh NAME [train-base options...]
#
# Reads the corpus from $DATA (default gpu/: train.txt or train.txt.xz, and val.txt), carried there by the
# device tool (see docs/specificity.md, "Plan for the GPU session"). Writes $OUT/NAME.log and
# $OUT/NAME.tar.part-aa, -ab, ... (15 MiB each; `cat NAME.tar.part-* | tar -x` here). The weights are saved in
# fp16 (an 8x512 model is 118 MB in fp32, and at most 64 MiB comes back; a later --save-dtype wins), and the
# tokenizer cache and the checkpoint stay behind: the folder that comes back is the model. Pass --minutes M (not
# --steps) to fit the run to the device's time: the steps are chosen from the warm-up's speed.
set -euo pipefail
name=${1:?usage: tools/device_train.sh NAME [train-base options...]}
shift
DATA=${DATA:-gpu}
OUT=${OUT:?OUT must name the folder whose files come back}
WORK=${WORK:-runs/device}
if [ ! -f "$DATA/train.txt" ]; then
    [ -f "$DATA/train.txt.xz" ] || { echo "no $DATA/train.txt or $DATA/train.txt.xz" >&2; exit 2; }
    python -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2] + '.part', 'wb'))" \
        "$DATA/train.txt.xz" "$DATA/train.txt"
    mv "$DATA/train.txt.part" "$DATA/train.txt"
fi
mkdir -p "$WORK"
PYTHONUNBUFFERED=1 python -m prompt_expander train-base "$DATA" --out "$WORK/$name" --save-dtype fp16 "$@" 2>&1 \
    | tee "$OUT/$name.log"
if [ ! -f "$WORK/$name/model.safetensors" ]; then  # stopped by --max-minutes: only a checkpoint was written
    echo "$WORK/$name has no model.safetensors: training stopped before its last step; its checkpoint stays" >&2
    exit 1
fi
rm -rf "$WORK/$name/cache" "$WORK/$name/checkpoint"
tar -C "$WORK" -cf - "$name" | split -b 15m - "$OUT/$name.tar.part-"
ls -l "$OUT"
