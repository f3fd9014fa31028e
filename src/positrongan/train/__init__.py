"""Training loops (CT VAE, GAN, baselines) with checkpoints, resume and loss logs."""
