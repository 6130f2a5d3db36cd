"""Training losses. Each returns one value per sample, shape ``(B,)``, so sample reweighting can weight them."""

from training.losses.contrastive import ContrastiveLoss, default_vgg19_path, gaussian_distance, load_vgg19_features
from training.losses.real import airlight_kept, dark_channel, fog_left
from training.losses.reconstruction import charbonnier, l1, ms_ssim, ms_ssim_loss
from training.losses.temporal import temporal_loss, warp

__all__ = ["ContrastiveLoss", "default_vgg19_path", "gaussian_distance", "load_vgg19_features", "charbonnier", "l1",
           "airlight_kept", "dark_channel", "fog_left", "ms_ssim", "ms_ssim_loss", "temporal_loss", "warp"]
