"""Enhancement mode: map a short-scan (low-count) slice to the reference slice of the same scan.

Modules: ``data`` (training pairs and splits from dataset/positron.npz), ``networks`` (the
dense memory U-Net of ours, the plain U-Net, the conditional PatchGAN), ``classical`` (the
Gaussian post-filter tuned on validation), ``fit`` (the matched-budget training loop of the
learned methods), ``quality`` (PSNR, SSIM, MS-SSIM, per-defect CRC/CNR, hallucination
measures), ``report`` (the metrics table and the per-method figure). docs/enhancement.md
describes the methods and the measures.
"""
