#!/usr/bin/env bash
# Dai & Le 2015 on SST-2 (docs/MULTITASK.md has the results): an LSTM pretrained as a sequence autoencoder
# (SA-LSTM) or as an LM (LM-LSTM) on the unlabelled SST-2 training sentences, vs the same LSTM randomly
# initialised (same tokenizer), each fine-tuned with recipes/finetune/sst2-lstm.yml (N labelled examples,
# E epochs of batch 32, lr 1e-3, whole dev set) with seeds $SEEDS (default 1 2); the fine-tuning runs in parallel.
# usage: bench/seq_autoencoder_sst2.sh OUT_DIR [PRETRAIN_STEPS] [N] [E]   (from the repository root)
set -euo pipefail
OUT=${1:?usage: bench/seq_autoencoder_sst2.sh OUT_DIR [PRETRAIN_STEPS] [N] [E]}
S=${2:-400}; N=${3:-1000}; E=${4:-6}
PY=${PY:-python}
PLM="$PY -m plmkit"
for kind in seq-autoencoder lm; do
  [ -d "$OUT/pre-$kind/final" ] || $PLM pretrain recipes/classic/lstm-$kind-sst2.yaml --out "$OUT/pre-$kind" \
      train.max_steps=$S train.eval_every=$S train.save_every=$S &
done
wait
for seed in ${SEEDS:-1 2}; do  # the random-init arm: the same architecture and tokenizer, fresh weights per seed
  [ -d "$OUT/random-s$seed" ] || $PY - "$OUT/pre-seq-autoencoder/final" "$OUT/random-s$seed" $seed <<'PYEOF'
import sys, torch, plmkit
from plmkit.classic.recurrent import build
src, dst, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(seed)
build(plmkit.load(src).config).save_pretrained(dst)
plmkit.load_tokenizer(src).save(dst)
PYEOF
done
for seed in ${SEEDS:-1 2}; do
  for arm in sa lm random; do
    case $arm in sa) M="$OUT/pre-seq-autoencoder/final";; lm) M="$OUT/pre-lm/final";; random) M="$OUT/random-s$seed";; esac
    [ -f "$OUT/ft-$arm-s$seed/eval.json" ] || $PLM finetune --recipe recipes/finetune/sst2-lstm.yml --model "$M" \
        --data "${PLMKIT_DATA:-../shared/data}/glue/SST-2" --out "$OUT/ft-$arm-s$seed" --seed $seed \
        --max-train-examples $N --epochs $E --no-epoch-eval > "$OUT/ft-$arm-s$seed.log" 2>&1 &
  done
done
wait
