"""The procedural talking-face corpus (the project's embedded data, with exact ground truth)."""
from .generate import corpus_contact_sheet, generate_corpus, make_identity, render_clip

__all__ = ["corpus_contact_sheet", "generate_corpus", "make_identity", "render_clip"]
