"""Image metrics (PSNR/SSIM/RMSE in a stated range) and task metrics with bootstrap intervals."""
