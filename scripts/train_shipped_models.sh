#!/usr/bin/env bash
# Rebuild the demo models shipped in models/ (SYNTHETIC data, CPU, about 2.5 hours on 2 cores):
# generate the synthetic cohorts into data/ (if missing), train each config in
# models/configs/, copy each best model to models/<config name>.safetensors, fit the
# brain-age model's age trend and store each what-if slider's check against the truth.
# Usage: bash scripts/train_shipped_models.sh [--set KEY=VALUE ...] [--no-age-trend] [config names...]
#   --set goes to every `hyperfusion train` (e.g. --set device=cuda); --no-age-trend skips fitting the
#   brain-age model's age trend (a tiny test run's model does not follow age; the shipped one must).
set -euo pipefail
cd "$(dirname "$0")/.."
hf=.venv/bin/hyperfusion
sets=(--set progress=false)
names=()
age_trend=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-age-trend) age_trend=0; shift ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --set=*) sets+=(--set "${1#--set=}"); shift ;;
    *) names+=("$1"); shift ;;
  esac
done
[ -f data/ad600/cohort.csv ] || $hf make-cohort --task ad --n 600 --seed 0 --out data/ad600 --jobs 2
# the HyperFusion AD model and its concatenation baseline train on 5,000 subjects (docs/models.md, learning curves)
[ -f data/ad5000/cohort.csv ] || $hf make-cohort --task ad --n 5000 --seed 1 --out data/ad5000 --jobs 2
# brain age trains and calibrates on brains of many shapes (docs/models.md, "Brain age trained on brains of many shapes")
[ -f data/ba1500_varied/participants.tsv ] ||
  $hf make-cohort --task brain_age --n 1500 --seed 1 --anatomy varied --out data/ba1500_varied --jobs 2
[ ${#names[@]} -gt 0 ] || names=(ad_hyperfusion ad_imaging ad_concat brain_age_hyperfusion risk_medfusion risk_hyperfusion)  # ad_film.toml: optional
for name in "${names[@]}"; do
  echo "== $name"
  $hf train "models/configs/$name.toml" "${sets[@]}" --overwrite  # a rebuild replaces runs/$name
  cp "runs/$name/model.safetensors" "models/$name.safetensors"
  if [ "$name" = brain_age_hyperfusion ] && [ "$age_trend" = 1 ]; then  # its age trend, on 300 subjects it never saw (docs/models.md)
    [ -f data/ba_cal300_varied/participants.tsv ] ||
      $hf make-cohort --task brain_age --n 300 --seed 2027 --anatomy varied --out data/ba_cal300_varied --jobs 2
    .venv/bin/python scripts/fit_age_bias.py models/brain_age_hyperfusion.safetensors \
      --calibration data/ba_cal300_varied/participants.tsv
  fi
  # each what-if slider checked against the generator's truth on fresh subjects (the panel says what it found)
  case "$name" in
    ad_hyperfusion|ad_concat|ad_film)
      [ -f data/ad_test1000/cohort.csv ] || $hf make-cohort --task ad --n 1000 --seed 2026 --out data/ad_test1000 --jobs 2
      $hf whatif-fidelity "models/$name.safetensors" data/ad_test1000/cohort.csv --n 100 --quiet --write ;;
    brain_age_hyperfusion)
      [ -f data/ba_test200/participants.tsv ] ||
        $hf make-cohort --task brain_age --n 200 --seed 2026 --out data/ba_test200 --jobs 2
      $hf whatif-fidelity "models/$name.safetensors" data/ba_test200/participants.tsv --n 100 --quiet --write ;;
  esac
done
ls -l models/*.safetensors
