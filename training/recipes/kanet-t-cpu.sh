#!/bin/sh
# The shipped CPU weights, streamdehaze/weights/kanet-t.safetensors, from scratch in one command:
#   sh training/recipes/kanet-t-cpu.sh
# Four stages on ../shared/data/clean, each fine-tuning the last checkpoint of the one before (model.init), then
# the fp16 copy into the package. About 5 hours on a 2-core CPU. Stage 4 needs fade-python
# (pip install -e '.[fade]') for data.max_fog. Our stage 1 followed a 30,000-step schedule up to step 9,500 before
# the committed 20,000-step one, so a rerun lands near, not exactly on, the shipped weights.
set -e
python -m training.train --config training/configs/kanet-t-cpu.toml --until 11500
python -m training.train --config training/configs/kanet-t-cpu-wide.toml
python -m training.train --config training/configs/kanet-t-cpu-deep.toml
python -m training.train --config training/configs/kanet-t-cpu-clear.toml
python -m training.ship runs/kanet-t-clear/step-0005000.safetensors
