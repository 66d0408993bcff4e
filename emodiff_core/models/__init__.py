"""Networks: denoiser (backbone UNet + ReferenceNet + audio encoder), expression GAN, SR head, regressor,
emotion judge."""
from .audio_encoder import AudioEncoder
from .expression import (ExpressionGenerator, GlobalDiscriminator, LocalDiscriminator, direction_error,
                         discriminator_losses, generator_losses)
from .judge import EmotionJudge, JudgeOutput
from .regressor import ExpressionRegressor
from .superres import SuperResolver
from .unet import DenoisingUNet, EMOdiffheadDenoiser, ReferenceNet

__all__ = [
    "AudioEncoder", "ExpressionGenerator", "GlobalDiscriminator", "LocalDiscriminator", "direction_error",
    "discriminator_losses", "generator_losses", "ExpressionRegressor", "SuperResolver", "DenoisingUNet",
    "EMOdiffheadDenoiser", "ReferenceNet", "EmotionJudge", "JudgeOutput",
]
