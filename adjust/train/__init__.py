"""Training: base models (masked-diffusion loss) and, later, ADJUST samplers."""
