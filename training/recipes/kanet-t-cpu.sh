#!/bin/sh
# The shipped CPU weights, streamdehaze/weights/kanet-t.safetensors, from scratch in one command:
#   sh training/recipes/kanet-t-cpu.sh
# Six stages, each fine-tuning the last checkpoint of the one before (model.init), then the fp16 copy into the
# package. Stages 1-4 train an image-output body on ../shared/data/clean; stage 5 puts the coefficient head on it
# and trains for the path that ships; stage 6 adds the real-haze terms on ../shared/data/real_hazy_train. About
# 8 hours on a 2-core CPU. Stages 4-6 need fade-python (pip install -e '.[fade]') for data.max_fog. Our stage 1
# followed a 30,000-step schedule up to step 9,500 before the committed 20,000-step one, so a rerun lands near,
# not exactly on, the shipped weights.
set -e
python -m training.train --config training/configs/kanet-t-cpu.toml --until 11500
python -m training.train --config training/configs/kanet-t-cpu-wide.toml
python -m training.train --config training/configs/kanet-t-cpu-deep.toml
python -m training.train --config training/configs/kanet-t-cpu-clear.toml
python -m training.train --config training/configs/kanet-t-cpu-coef.toml --until 1000
python -m training.train --config training/configs/kanet-t-cpu-real.toml --until 1750
python -m training.ship runs/kanet-t-real/step-0001750.safetensors
