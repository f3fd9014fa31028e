"""Neural networks: the CT VAE, the attention memory, the DenseNet generator, the PatchGAN
discriminator and the baselines. One module per network."""
