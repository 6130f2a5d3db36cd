#!/bin/sh
# The shipped CPU weights, streamdehaze/weights/kanet-t.safetensors, from scratch in one command:
#   sh training/recipes/kanet-t-cpu.sh
# Seven stages, each fine-tuning the last checkpoint of the one before (model.init), then the fp16 copy into the
# package. Stages 1-4 train an image-output body on ../shared/data/clean; stage 5 puts the coefficient head on it
# and trains for the path that ships; stage 6 adds the real-haze terms on ../shared/data/real_hazy_train; stage 7
# trains stage 6 on the context the product gives it (224 px crops), and the package gets the average of stages
# 6 and 7. About 9 hours on a 2-core CPU. Stages 4-7 need fade-python (pip install -e '.[fade]') for
# data.max_fog. Our stage 1 followed a 30,000-step schedule up to step 9,500 before the committed 20,000-step
# one, and our stage 7 started from the fp16 copy of stage 6, so a rerun lands near, not exactly on, the
# shipped weights. Stopped (Ctrl-C, a crash), the same command goes on where it was: each stage continues from its
# last checkpoint, and a finished stage has nothing to do.
set -e
python -m training.train --config training/configs/kanet-t-cpu.toml --until 11500
python -m training.train --config training/configs/kanet-t-cpu-wide.toml
python -m training.train --config training/configs/kanet-t-cpu-deep.toml
python -m training.train --config training/configs/kanet-t-cpu-clear.toml
python -m training.train --config training/configs/kanet-t-cpu-coef.toml --until 1000
python -m training.train --config training/configs/kanet-t-cpu-real.toml --until 1750
python -m training.train --config training/configs/kanet-t-cpu-context.toml
python -m training.ship runs/kanet-t-real/step-0001750.safetensors runs/kanet-t-context/step-0001500.safetensors
