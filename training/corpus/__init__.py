"""The procedural talking-face corpus (the project's embedded data, with exact ground truth)."""
from .generate import (clip_emotion_plan, corpus_contact_sheet, emotion_psi, generate_corpus, make_identity,
                       render_clip, render_twin_frames)

__all__ = ["clip_emotion_plan", "corpus_contact_sheet", "emotion_psi", "generate_corpus", "make_identity",
           "render_clip", "render_twin_frames"]
