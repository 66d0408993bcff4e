"""Training for EMOdiffhead: a procedural talking-face corpus, real-dataset preparation, training of the
expression GAN, the denoiser, the super-resolution head and the expression regressor, evaluation and
export to the checkpoints the nodes load. Entry point: ``python -m training <command>``.

This package imports emodiff_core, never the ComfyUI nodes.
"""
