#!/bin/sh
# The GPU default weights, streamdehaze/weights/kanet-s.safetensors, in one GPU run of under 9 minutes.
# Here, once (needs fade-python): the data pack that travels with the code (runs/ is ignored; carry it):
#   python -m training.pack runs/pack
# On the GPU machine (kornia is not installed there: carry its wheels, see the device notes), from the repo root:
#   sh training/recipes/kanet-s-gpu.sh
# Then here: python -m streamdehaze.evaluate --model kanet-s --weights streamdehaze/weights/kanet-s.safetensors;
# keep the file only where it beats kanet-t (--model auto prefers kanet-s on CUDA when it ships).
set -e
test -d runs/pack/clean || { echo "no data pack: run python -m training.pack runs/pack first" >&2; exit 2; }
python -m training.train --config training/configs/kanet-s-cuda-coef.toml --minutes 8 --quiet
python -m training.ship runs/kanet-s-gpu
