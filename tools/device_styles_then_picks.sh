#!/usr/bin/env bash
# One device command: the photo and anime styles trained on a base, then more self-distill picks from that base,
# each packed into $OUT as soon as it exists. Run as the twenty-eighth session did (docs/specificity.md):
#
#   gpu2/base: the base's folder (draft_tokens.safetensors, README.md and training_summary.json left out, and its
#     card's contrast_words, candidates and pick_words set to 0, 1 and 0, so that it picks as version 1 did)
#   gpu2/photo, gpu2/anime: train.txt.xz and val.txt, the prompts of runs/data that each style's --select keeps
#   gpu2/subjects.txt.xz: the first 150,000 prompts of runs/data/train.txt, whose first phrases are the subjects
#   gpu2/dev: ../shared/data/dev/*.txt, never used as subjects
#   mv models /tmp/models-aside; device run, carry ["gpu2"]:  BUDGET=270 bash tools/device_styles_then_picks.sh
#
# Writes $OUT/photo.log, $OUT/photo.tar, $OUT/anime.log, $OUT/anime.tar and $OUT/distill2.tar.
set -u
t0=$(date +%s)
left() { echo $(( ${BUDGET:-280} - ($(date +%s) - t0) )); }
for f in gpu2/photo/train.txt gpu2/anime/train.txt gpu2/subjects.txt; do xz -dc "$f.xz" > "$f"; done
for name in ${NAMES:-photo anime}; do
  case $name in
    photo) sel="photo, photograph, photography, photographic, photorealistic, dslr, 35mm, 50mm, 85mm, kodak, portra, canon, nikon, bokeh, polaroid";;
    anime) sel="anime, manga, ghibli, makoto shinkai, pixiv, waifu, kyoto animation, cel shaded, cel shading, danbooru";;
  esac
  PYTHONUNBUFFERED=1 python -m prompt_expander train-lora gpu2/$name --base gpu2/base --out runs/loras/$name --select "$sel" \
      --r 16 --alpha 32.0 --steps ${STEPS:-300} --batch-size 32 --lr 0.001 --warmup 50 --weight-decay 0.1 --seed 1234 2>&1 \
      | tr '\r' '\n' | grep -v 'it/s' > "$OUT/$name.log"
  rm -rf runs/loras/$name/cache runs/loras/$name/checkpoint runs/loras/$name/subset
  tar -C runs/loras -cf "$OUT/$name.tar" $name
  echo "$name done; $(left) s left"; tail -3 "$OUT/$name.log"
done
mins=$(python -c "print(max(0.2, ($(left) - 30) / 60))")
echo "self-distill for $mins min"
timeout $(( $(left) > 40 ? $(left) - 10 : 30 )) python -m prompt_expander self-distill gpu2/subjects.txt --model gpu2/base --subjects 3000 \
    --candidates 8 --batch 32 --seed 7000 --exclude gpu2/dev/partiprompts.txt --exclude gpu2/dev/imagenet_classes.txt \
    --exclude gpu2/dev/simple_animals.txt --minutes "$mins" --out runs/distill2 2>&1 | tr '\r' '\n' | grep -v 'subject/s\]$' | tail -3
tar -C runs -cf "$OUT/distill2.tar" distill2
ls -l "$OUT"; echo "done in $(( $(date +%s) - t0 )) s"
