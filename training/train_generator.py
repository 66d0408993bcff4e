"""Train the expression GAN (section 3.3): LSTM generator G, TCN global discriminator D_g (with its
emotion classifier head) and MLP local discriminator D_l, with the losses of Eq. 17-19.

Data: psi sequences of full-intensity emotional clips and of neutral clips (the paper trains on MEAD's
highest level), cut into random windows of ``data.length`` frames.

Beside the paper's losses, ``loss.lambda_direction`` (0 = the paper's recipe) weighs `direction_error`: the two
sequences of one noise, G(y, z) - G(neutral, z), should differ by the data's emotion part of y (the training split's
counterfactual twins, `twins.mean_emotion_parts`), which is what Eq. 14's intensity edit asks the denoiser for.
``init_from`` starts the generator from an exported checkpoint's (the discriminators start afresh);
``loss.lambda_anchor`` then weighs the squared error of G(neutral, z) against the starting generator's at the same z
(`anchor_error`), so that a fine-tune can change the emotions' directions and keep the neutral sequences (the
speaking mouth, the blinks) that the rest of a bundle was measured with; with ``loss.anchor_mean_direction`` it also
holds G(y, z) to the start's, moved by the data's emotion part less the start's d_y averaged over the row's frames
(`mean_direction_targets`): only the time mean of each noise's d_y changes. ``loss.direction_magnitudes`` "start"
keeps, of each emotion's data part, which components it moves and takes how far from the starting generator
(`start_magnitude_directions`). ``loss.anchor_support_course`` holds G(y, z) to the start's own G(y, z) on the
components the data's part of y moves and to the start's G(neutral, z) plus the data's part elsewhere
(`support_course_targets`): the start's emotions less what they ask beside the data's; with
``loss.anchor_speech_course`` the speaking mouth's components keep the start's course everywhere; the components
named in ``loss.support_kept`` join every emotion's support, those in ``loss.support_kept_by_emotion`` one
emotion's (`support_with_kept`); ``loss.anchor_frames`` rolls the anchor's sequences out longer than the data's
windows, so that a fine-tune holds what the videos play after them too, and ``loss.anchor_window_weight`` counts
the data's window again inside such a rollout (`windowed_anchor_error`).
``loss.lambda_adversarial`` 0 (with lambda_mse and lambda_cls 0) leaves only these terms: the discriminators still
train, unused. A run with a direction writes its targets to direction_targets.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from emodiff_core.atomic import atomic_output
from emodiff_core.checkpoint import load_components
from emodiff_core.emotions import EMOTIONS, NEUTRAL, emotion_index
from emodiff_core.facemodel import COMPONENT, EXPRESSION_COMPONENTS, SPEECH_MOUTH_COMPONENTS
from emodiff_core.models import (ExpressionGenerator, GlobalDiscriminator, LocalDiscriminator, direction_error,
                                 discriminator_losses, generator_losses)

from .clips import ClipDataset
from .configfile import ModelSection, TrainingConfigError, load_config, require, require_positive
from .data import emotion_sequences
from .export import export_component
from .loop import EMA, CsvLog, lr_at, optimizer_step, run_steps, setup_distributed, unwrap, wrap_ddp
from .twins import load_clip_twins, mean_emotion_parts


@dataclass(frozen=True)
class LossSection:
    """lambda_MSE and lambda_cls of Eq. 19 and the weight of its adversarial terms (1 in the paper); the weights of
    `direction_error` and `anchor_error`, whether and how the anchor holds the emotional rows too
    (`mean_direction_targets`, `support_course_targets`, with or without the speech components' course) and where the
    directions' magnitudes come from ("data", or "start": `start_magnitude_directions`) and which named components
    the support course keeps in every emotion and in named ones (``support_kept_by_emotion``: emotion -> list of
    components; `support_with_kept`), none in the paper; ``anchor_frames``: how many frames the anchor's (and the
    direction term's) rollouts run, 0 = ``data.length`` as in every earlier run; ``anchor_window_weight``: the anchor's
    error over the first ``data.length`` frames added again at this weight (`windowed_anchor_error`);
    ``anchor_emotion_weight`` (emotion -> weight, 1 for the others): each anchor row's error weighed by its label,
    neutral's weighing the e_n term (`anchor_weight_table`). A file that leaves out one of the last twelve has the
    paper's recipe there (1, 0, 0, false, false, false, "data", none, none, 0, 0, none)."""

    ADDED_KEYS = {"lambda_adversarial": 1.0, "lambda_direction": 0.0, "lambda_anchor": 0.0,
                  "anchor_mean_direction": False, "anchor_support_course": False,
                  "anchor_speech_course": False, "direction_magnitudes": "data", "support_kept": (),
                  "support_kept_by_emotion": {}, "anchor_frames": 0, "anchor_window_weight": 0.0,
                  "anchor_emotion_weight": {}}

    lambda_mse: float
    lambda_cls: float
    lambda_adversarial: float
    lambda_direction: float
    lambda_anchor: float
    anchor_mean_direction: bool
    anchor_support_course: bool
    anchor_speech_course: bool
    direction_magnitudes: str
    support_kept: Tuple[str, ...]
    support_kept_by_emotion: Dict[str, Any]
    anchor_frames: int
    anchor_window_weight: float
    anchor_emotion_weight: Dict[str, Any]

    def validate(self) -> None:
        for key in ("lambda_mse", "lambda_cls", "lambda_adversarial", "lambda_direction", "lambda_anchor"):
            require(getattr(self, key) >= 0, f"loss.{key} must be >= 0, got {getattr(self, key)}")
        require(self.lambda_anchor > 0 or not self.anchor_mean_direction,
                "loss.anchor_mean_direction moves the anchor's targets: it needs loss.lambda_anchor > 0")
        require(self.lambda_anchor > 0 or not self.anchor_support_course,
                "loss.anchor_support_course sets the anchor's targets: it needs loss.lambda_anchor > 0")
        require(not (self.anchor_mean_direction and self.anchor_support_course),
                "loss.anchor_mean_direction and loss.anchor_support_course are two targets for the same rows: "
                "choose one")
        require(self.anchor_support_course or not self.anchor_speech_course,
                "loss.anchor_speech_course is a part of loss.anchor_support_course's targets: turn that on too")
        require(self.direction_magnitudes in ("data", "start"),
                f"loss.direction_magnitudes must be 'data' or 'start', got {self.direction_magnitudes!r}")
        require(self.direction_magnitudes == "data" or self.lambda_direction > 0 or self.anchor_mean_direction,
                "loss.direction_magnitudes 'start' sets the targets of loss.lambda_direction or "
                "loss.anchor_mean_direction: turn one of them on")
        emotional = [e for e in EMOTIONS if e != NEUTRAL]
        odd = [e for e in self.support_kept_by_emotion if e not in emotional]
        require(not odd, f"loss.support_kept_by_emotion names {odd}, not emotions with a support; choose among "
                         f"{', '.join(emotional)}")
        for key, names in [("support_kept", self.support_kept)] + [
                (f"support_kept_by_emotion.{e}", names) for e, names in self.support_kept_by_emotion.items()]:
            require(isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names),
                    f"loss.{key} must be a list of component names, got {names!r}")
            unknown = [name for name in names if name not in EXPRESSION_COMPONENTS]
            require(not unknown, f"loss.{key} names {unknown}, not components of psi; choose among "
                                 f"{', '.join(EXPRESSION_COMPONENTS)}")
        require(self.anchor_support_course or not (self.support_kept or self.support_kept_by_emotion),
                "loss.support_kept and loss.support_kept_by_emotion widen loss.anchor_support_course's support: "
                "turn that on too")
        require(self.anchor_frames >= 0, f"loss.anchor_frames must be >= 0 (0 = data.length), got {self.anchor_frames}")
        require(self.anchor_frames == 0 or self.lambda_anchor > 0 or self.lambda_direction > 0,
                "loss.anchor_frames sets the rollout of loss.lambda_anchor's and loss.lambda_direction's terms: turn "
                "one of them on")
        require(self.anchor_window_weight >= 0,
                f"loss.anchor_window_weight must be >= 0, got {self.anchor_window_weight}")
        # (that the anchor runs longer than the window is checked where data.length is known)
        require(self.anchor_window_weight == 0 or self.lambda_anchor > 0,
                "loss.anchor_window_weight weighs the anchor's error over the data's window again: it needs "
                "loss.lambda_anchor > 0")
        odd = [e for e in self.anchor_emotion_weight if e not in EMOTIONS]
        require(not odd, f"loss.anchor_emotion_weight names {odd}, not emotions; choose among {', '.join(EMOTIONS)}")
        bad = {e: w for e, w in self.anchor_emotion_weight.items()
               if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0}
        require(not bad, f"loss.anchor_emotion_weight's weights must be numbers >= 0, got {bad}")
        require(not self.anchor_emotion_weight or self.lambda_anchor > 0,
                "loss.anchor_emotion_weight weighs the anchor's rows: it needs loss.lambda_anchor > 0")

    @property
    def needs_directions(self) -> bool:
        return self.lambda_direction > 0 or self.anchor_mean_direction or self.anchor_support_course


@dataclass(frozen=True)
class OptimSection:
    """Adam at constant rates (the paper's GAN recipe), or with ``lr_decay`` "cosine" both rates follow the other
    trainers' schedule (`loop.lr_at`, no warm-up: cosine to a tenth over ``steps``). With the adversarial terms off,
    a fine-tune is a regression onto the anchor's targets, and a kept emotion's G(y, z) ends a few hundredths off the
    start's at a given noise; the decay was tried against that and did not close it (benchmarks/README.md, KDLWBC):
    the shared weights, moved for the other emotions, are the cause. ``trainable`` "moved_emotion_rows" trains only
    the emotion embedding's rows of the emotions whose support course moves them (`moved_emotion_rows`) and leaves
    every other weight the start's bit for bit, so that the neutral sequences and an emotion kept whole are the
    start's at every noise, not only at the training's. A file that leaves either out has "constant" and "all" (the
    whole generator trains), as every earlier file."""

    ADDED_KEYS = {"lr_decay": "constant", "trainable": "all"}
    LR_DECAYS = ("constant", "cosine")
    TRAINABLE = ("all", "moved_emotion_rows")

    lr_g: float
    lr_d: float
    batch_size: int
    steps: int
    ema_decay: float
    lr_decay: str
    trainable: str

    def validate(self) -> None:
        require(self.lr_g >= 0 and self.lr_d >= 0, "optim.lr_g and optim.lr_d must be >= 0")
        require(self.lr_decay in self.LR_DECAYS,
                f"optim.lr_decay must be one of {', '.join(self.LR_DECAYS)}, got {self.lr_decay!r}")
        require(self.trainable in self.TRAINABLE,
                f"optim.trainable must be one of {', '.join(self.TRAINABLE)}, got {self.trainable!r}")
        require_positive("optim", batch_size=self.batch_size, steps=self.steps)
        require(0.0 <= self.ema_decay < 1.0, f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class DataSection:
    """``length``: frames per training window; ``min_intensity``: emotional clips below it are left out."""

    split: str
    length: int
    min_intensity: float

    def validate(self) -> None:
        require(self.length >= 2, f"data.length must be at least 2 frames, got {self.length}")


@dataclass(frozen=True)
class ScheduleSection:
    log_every: int
    checkpoint_every: int
    sample_every: int

    def validate(self) -> None:
        require_positive("schedule", log_every=self.log_every, checkpoint_every=self.checkpoint_every)
        require(self.sample_every >= 0, f"schedule.sample_every must be >= 0, got {self.sample_every}")


@dataclass(frozen=True)
class GeneratorTrainingConfig:
    """An expression-GAN training file (training/configs/generator_*.json)."""

    model: ModelSection
    loss: LossSection
    optim: OptimSection
    data: DataSection
    schedule: ScheduleSection
    seed: int
    threads: int

    def validate(self) -> None:
        require_positive("", threads=self.threads)
        require(self.loss.anchor_frames == 0 or self.loss.anchor_frames >= self.data.length,
                f"loss.anchor_frames ({self.loss.anchor_frames}) is shorter than data.length ({self.data.length}): "
                "the discriminators' windows are the first data.length frames of the same rollout")
        require(self.optim.trainable == "all" or self.loss.anchor_support_course,
                "optim.trainable 'moved_emotion_rows' trains the rows the support course moves: it needs "
                "loss.anchor_support_course (and --init-from, the start it keeps)")
        require(self.loss.anchor_window_weight == 0 or self.loss.anchor_frames > self.data.length,
                f"loss.anchor_window_weight counts the first data.length ({self.data.length}) frames again, which is "
                f"only a different loss.lambda_anchor when loss.anchor_frames ({self.loss.anchor_frames}) is not "
                "longer: set loss.anchor_frames above data.length or the weight to 0")


LOG_FIELDS = ["step", "seconds", "d_total", "d_global", "d_local", "d_cls", "g_total", "g_adv_global",
              "g_adv_local", "g_mse", "g_cls", "class_accuracy"]
OPTIONAL_FIELDS = {"lambda_direction": "g_direction", "lambda_anchor": "g_anchor"}   # logged where the term is on


def anchor_error(sequences: torch.Tensor, held: torch.Tensor,
                 row_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Squared error of the generator's sequences against what the anchor holds them to at the same z (the starting
    generator's G(neutral, z), `mean_direction_targets` or `support_course_targets`; [B, N, D] each), summed over D
    and averaged over frames and rows, as Eq. 19's MSE term is; with ``row_weights`` ([B]) each row's mean error
    weighed by its weight before the mean over rows."""
    per_frame = ((sequences - held) ** 2).sum(dim=2)
    if row_weights is None:
        return per_frame.mean()
    return (per_frame.mean(dim=1) * row_weights).mean()


def anchor_weight_table(weights: Mapping[str, float], device=None) -> Optional[torch.Tensor]:
    """[num_emotions]: ``loss.anchor_emotion_weight`` per emotion index (1 where it names no weight), for
    `anchor_row_weights`; None without weights, so that every earlier recipe computes its error as before, bit for
    bit.

    Why: a fine-tune that keeps an emotion whole (sad in KDLWB) and the neutral sequences still ends their G(y, z) a
    few hundredths off the start's at a given noise, since the weights shared with the moved emotions move; the
    photographs' videos play one noise per seed, where that is a less sad face (benchmarks/README.md, "KDLWB stopped
    at 24 videos"). A higher weight on those rows was to trade the moved emotions' fit for theirs; at 8 it moved
    sad's error at fresh noises by a twentieth (benchmarks/README.md, "The neutral and sad rows weighed")."""
    if not weights:
        return None
    table = torch.ones(len(EMOTIONS), device=device)
    for emotion, weight in weights.items():
        table[emotion_index(emotion)] = float(weight)
    return table


def anchor_row_weights(table: Optional[torch.Tensor], labels: torch.Tensor) -> Optional[torch.Tensor]:
    """[B]: the rows' weights by label from `anchor_weight_table` (None stays None)."""
    return None if table is None else table[labels]


def windowed_anchor_error(sequences: torch.Tensor, held: torch.Tensor, window: int, weight: float,
                          row_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`anchor_error` over the whole rollout plus ``weight`` times it over the first ``window`` frames (``row_weights``
    as `anchor_error`'s, in both).

    Why: an anchor rolled out over a 10 s video's 300 frames averages its error over all of them, so its first 48
    frames carry 48/300 of it where a 48-frame anchor gave them all of it; the arm trained so (KDL) moved
    components there that FLIE's videos, which read the first 16 frames, count (benchmarks/README.md, "KDLW").
    Weight 1 holds the first window about as the 48-frame anchor did and the rest as the long one does."""
    error = anchor_error(sequences, held, row_weights)
    if weight > 0:
        error = error + weight * anchor_error(sequences[:, :window], held[:, :window], row_weights)
    return error


def mean_direction_targets(start_emotional: torch.Tensor, start_neutral: torch.Tensor, directions: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    """[B, N, D]: the starting generator's G(y, z) (``start_emotional``) moved, row by row, by the data's emotion part
    of y (``directions[y]``, 0 for neutral) less the start's d_y = G(y, z) - G(neutral, z) averaged over the row's
    frames: the same time course with its d_y's time mean the data's."""
    mean_step = (start_emotional - start_neutral).mean(dim=1)
    return start_emotional + (directions[labels] - mean_step)[:, None]


def data_support(directions: np.ndarray) -> np.ndarray:
    """[num_emotions, D] bool: in each emotion's row of ``directions`` (the data's parts), the named components it
    moves by at least `metrics_video.EDIT_DIM_SHARE` of its largest named move: the components FLIE measures that
    emotion's edit on. Unnamed components and an all-zero row (neutral) are never in it."""
    from emodiff_core.metrics_video import moved_components

    named = len(EXPRESSION_COMPONENTS)
    support = np.zeros(np.shape(directions), bool)
    support[:, :named] = moved_components(np.asarray(directions)[:, :named])
    return support


def support_with_kept(support: np.ndarray, kept: Sequence[str],
                      kept_by_emotion: Optional[Mapping[str, Sequence[str]]] = None) -> np.ndarray:
    """``support`` (`data_support`, rows in `EMOTIONS` order) with the named ``kept`` components added to every row
    that has a support (an emotion's; neutral's stays empty) and those of ``kept_by_emotion[e]`` to emotion e's row:
    where the support course keeps the starting generator's own G(y, z), the time course and the magnitude it asks
    beside the data's included."""
    out = np.array(support, bool)
    out[np.ix_(out.any(axis=1), [COMPONENT[name] for name in kept])] = True
    for emotion, names in (kept_by_emotion or {}).items():
        out[emotion_index(emotion), [COMPONENT[name] for name in names]] = True
    return out


def moved_emotion_rows(support: np.ndarray) -> np.ndarray:
    """[num_emotions] bool: the emotions whose support course targets leave the start's own G(y, z) on some named
    component (a row of ``support``, `support_with_kept`, with a support but not every named component in it).
    Neutral (held to the start's e_n) and an emotion kept whole are not among them."""
    named = np.asarray(support)[:, :len(EXPRESSION_COMPONENTS)]
    return named.any(axis=1) & ~named.all(axis=1)


def support_course_targets(start_emotional: torch.Tensor, start_neutral: torch.Tensor, directions: torch.Tensor,
                           support: torch.Tensor, labels: torch.Tensor,
                           speech: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[B, N, D]: per row, the starting generator's own G(y, z) (``start_emotional``) on the components of y's data
    support (``support[y]``, `data_support`) and its G(neutral, z) plus the data's part of y (``directions[y]``)
    elsewhere; with ``speech`` ([D] bool), those components outside the support keep the start's own G(y, z) too,
    moved so that the row's time-mean d_y there is the data's (`mean_direction_targets`).

    Why: the demo's d_y keeps the photographs and the data's support brings FLIE to its floor (benchmarks/README.md,
    "The data's support at the demo's magnitudes"); holding the start's whole course on the support keeps how its
    emotions rise over the first second and how their mouth speaks, which a constant d_y loses. ``speech``: a mouth
    component outside the support (sad's and happy's jaw) held to G(neutral, z) plus a constant speaks with the
    neutral sequence's mouth, twice as much as the demo's emotional sequences; keeping the start's there was tried
    (arm KS) and gave the photographs nothing back."""
    keep = support[labels][:, None]                                         # [B, 1, D]
    off_support = start_neutral + directions[labels][:, None]
    if speech is not None:
        moved = mean_direction_targets(start_emotional, start_neutral, directions, labels)
        off_support = torch.where(speech.view(1, 1, -1) & ~keep, moved, off_support)
    return torch.where(keep, start_emotional, off_support)


def corpus_emotion_directions(data_dir: str, split: str) -> np.ndarray:
    """[num_emotions, 50]: each emotion's part of psi at k = 1 averaged over the clips of ``split`` that have
    counterfactual twins (`twins.mean_emotion_parts`); the neutral row is 0."""
    twins = [t for t in load_clip_twins(data_dir, ClipDataset(data_dir).metas(split)) if t is not None]
    if not twins:
        raise TrainingConfigError(f"{data_dir}: no clip of split {split!r} has counterfactual twins, which "
                                  "loss.lambda_direction, loss.anchor_mean_direction and loss.anchor_support_course "
                                  "need; render the corpus with `python -m training corpus` or turn them off")
    emotional = [e for e in EMOTIONS if e != NEUTRAL]
    parts = mean_emotion_parts(twins, emotional)
    return np.stack([np.zeros_like(parts[emotional[0]]) if e == NEUTRAL else parts[e] for e in EMOTIONS])


# `start_magnitude_directions`: the starting generator's d_y over 250 frames (8 s at the pack's 30 fps), long enough
# for the demo's to settle (its first 16 frames differ: benchmarks/README.md, "M screened"), averaged over as many
# seeds as the screen uses
START_MAGNITUDE_FRAMES = 250
START_MAGNITUDE_SEEDS = 32


def start_magnitude_directions(directions: np.ndarray, start, frames: Optional[int] = None,
                               seeds: Optional[int] = None) -> np.ndarray:
    """[num_emotions, 50]: ``directions`` (the data's emotion parts, `corpus_emotion_directions`) with, in each
    emotion's row, the components of its data support (`data_support`: those FLIE measures its edit on) set to the
    starting generator's d_y there (`pipeline.mean_emotion_directions` over ``frames`` frames and ``seeds`` noises;
    None: `START_MAGNITUDE_FRAMES`, `START_MAGNITUDE_SEEDS`).

    Why: the data's directions bring FLIE to its floor, the demo generator's long-run ones keep the photographs
    (benchmarks/README.md, "The generator trained toward the data's directions"). This keeps the data's support,
    which FLIE reads, and the start's magnitudes on it; every other component stays the data's (near 0)."""
    from emodiff_core.pipeline import mean_emotion_directions

    named = len(EXPRESSION_COMPONENTS)
    emotional = [e for e in EMOTIONS if e != NEUTRAL]
    start_steps = mean_emotion_directions(start, emotional, START_MAGNITUDE_FRAMES if frames is None else frames,
                                          START_MAGNITUDE_SEEDS if seeds is None else seeds, named)
    support = data_support(directions)
    out = np.array(directions, copy=True)
    for emotion in emotional:
        j = emotion_index(emotion)
        out[j, support[j]] = start_steps[emotion][support[j, :named]]
    return out


def _load_start(init_from: str, cfg) -> ExpressionGenerator:
    start = load_components(init_from, ["expression_generator"])["expression_generator"]
    if start.config.override_emotions:
        raise TrainingConfigError(f"{init_from}: its expression generator is two networks (override_emotions "
                                  f"{', '.join(start.config.override_emotions)}); fine-tune from a plain generator, "
                                  "then assemble with `export --expression-override-from`")
    # the warm-up is how sequences are read out (`export --expression-warmup`), not the weights
    if dataclasses.replace(start.config, warmup_frames=cfg.warmup_frames) != cfg:
        raise TrainingConfigError(f"{init_from}: its expression generator was built from another model config than "
                                  "the training file's; fine-tune with the same preset and overrides")
    return start


def _windows(seqs, labels, rng, batch, length):
    idx = rng.integers(len(seqs), size=batch)
    out = []
    for i in idx:
        s = seqs[i]
        start = int(rng.integers(len(s) - length + 1))
        out.append(s[start: start + length])
    return torch.from_numpy(np.stack(out)), torch.from_numpy(labels[idx]).long()


def train(config_path: str, data_dir: str, out_dir: str, resume: bool = False, device=None, max_steps=None,
          stop_after: int = None, init_from: str = None) -> str:
    cfg_file = load_config(config_path, GeneratorTrainingConfig)
    torch.set_num_threads(cfg_file.threads)
    info = setup_distributed(device)
    cfg = cfg_file.model.build("expression", config_path)
    o, d, lw, sched = cfg_file.optim, cfg_file.data, cfg_file.loss, cfg_file.schedule
    seed = cfg_file.seed
    total = int(max_steps or o.steps)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    gen, d_g, d_l = ExpressionGenerator(cfg), GlobalDiscriminator(cfg), LocalDiscriminator(cfg)
    start = _load_start(init_from, cfg) if init_from else None
    if lw.lambda_anchor > 0 and start is None:
        raise TrainingConfigError(f"{config_path}: loss.lambda_anchor holds the neutral sequences to the generator "
                                  "a fine-tune starts from; give --init-from or set it to 0")
    if lw.direction_magnitudes == "start" and start is None:
        raise TrainingConfigError(f"{config_path}: loss.direction_magnitudes 'start' takes the directions' magnitudes "
                                  "from the generator a fine-tune starts from; give --init-from")
    if start is not None:
        gen.load_state_dict(start.state_dict())
        start.to(info.device).eval().requires_grad_(False)
    for m in (gen, d_g, d_l):
        m.to(info.device)
    ema = EMA(gen, o.ema_decay)
    seqs, labels = emotion_sequences(data_dir, d.split, d.length, d.min_intensity)
    present = sorted(set(labels.tolist()))
    if info.main:
        print(f"generator data: {len(seqs)} sequences, emotions present: {[EMOTIONS[i] for i in present]}", flush=True)
    directions = support = speech = None
    if lw.needs_directions:
        targets = corpus_emotion_directions(data_dir, d.split)
        support = support_with_kept(data_support(targets), lw.support_kept, lw.support_kept_by_emotion)
        support = torch.from_numpy(support).to(info.device)
        if lw.anchor_speech_course:
            speech = torch.zeros(targets.shape[1], dtype=torch.bool, device=info.device)
            speech[list(SPEECH_MOUTH_COMPONENTS)] = True
        if lw.direction_magnitudes == "start":
            targets = start_magnitude_directions(targets, start)
        if info.main:
            with atomic_output(os.path.join(out_dir, "direction_targets.json")) as tmp, open(tmp, "w") as f:
                json.dump({e: [round(float(v), 6) for v in row] for e, row in zip(EMOTIONS, targets)}, f, indent=1)
        directions = torch.from_numpy(targets).float().to(info.device)
    trained = list(gen.parameters())
    if o.trainable == "moved_emotion_rows":
        rows = torch.from_numpy(moved_emotion_rows(support.cpu().numpy())).to(info.device)
        for param in gen.parameters():
            param.requires_grad_(False)
        embedding = gen.emotion_embed.weight
        embedding.requires_grad_(True)
        # the other rows' gradient is zeroed, so Adam leaves them exactly (its moments stay 0)
        embedding.register_hook(lambda grad: grad * rows[:, None].to(grad.dtype))
        trained = [embedding]
        if info.main:
            print(f"generator: training the emotion rows of {[e for e, r in zip(EMOTIONS, rows.tolist()) if r]} "
                  "only", flush=True)
    gen_ddp, dg_ddp, dl_ddp = (wrap_ddp(m, info) for m in (gen, d_g, d_l))     # after the freezing: DDP reads it
    opt_g = torch.optim.Adam(trained, lr=o.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d_g.parameters()) + list(d_l.parameters()), lr=o.lr_d, betas=(0.5, 0.999))
    neutral = emotion_index(NEUTRAL)
    frames = lw.anchor_frames or d.length
    weight_table = anchor_weight_table(lw.anchor_emotion_weight, info.device)
    log = CsvLog(os.path.join(out_dir, "log.csv"),
                 LOG_FIELDS + [field for key, field in OPTIONAL_FIELDS.items() if getattr(lw, key) > 0])

    def rate(base: float, step: int) -> float:
        """The step's rate (set every step by `optimizer_step`, so that a resumed run follows the same schedule)."""
        return lr_at(step, base, 0, total) if o.lr_decay == "cosine" else base

    def step_fn(step: int) -> Dict[str, float]:
        rng = np.random.default_rng([seed, step, info.rank])
        gen_t = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        real, y = _windows(seqs, labels, rng, o.batch_size, d.length)
        real, y = real.to(info.device), y.to(info.device)
        z = torch.randn(len(y), cfg.noise_dim, generator=gen_t).to(info.device)
        # one rollout serves both: the generator is causal, so its first data.length frames are the discriminators'
        # window and the whole of it (loss.anchor_frames) the anchor's and the direction term's
        rollout = gen_ddp(y, frames, z=z)
        fake = rollout[:, :d.length]
        d_losses = discriminator_losses(dg_ddp, dl_ddp, real, fake.detach(), y)
        optimizer_step(opt_d, d_losses["total"], rate(o.lr_d, step))
        g_losses = generator_losses(dg_ddp, dl_ddp, fake, real, y, lw.lambda_mse, lw.lambda_cls,
                                    lw.lambda_adversarial)
        if lw.lambda_direction > 0 or lw.lambda_anchor > 0:     # the same z under the neutral label: Eq. 14's e_n
            neutral_labels = torch.full_like(y, neutral)
            e_n = gen_ddp(neutral_labels, frames, z=z)
            if lw.lambda_direction > 0:
                g_losses["direction"] = direction_error(rollout, e_n, directions, y, neutral)
                g_losses["total"] = g_losses["total"] + lw.lambda_direction * g_losses["direction"]
            if lw.lambda_anchor > 0:
                with torch.no_grad():
                    held = start(neutral_labels, frames, z=z)
                    moved = None
                    if lw.anchor_mean_direction:
                        moved = mean_direction_targets(start(y, frames, z=z), held, directions, y)
                    elif lw.anchor_support_course:
                        moved = support_course_targets(start(y, frames, z=z), held, directions, support, y, speech)
                g_losses["anchor"] = windowed_anchor_error(
                    e_n, held, d.length, lw.anchor_window_weight,
                    anchor_row_weights(weight_table, neutral_labels))
                if moved is not None:
                    g_losses["anchor"] = g_losses["anchor"] + windowed_anchor_error(
                        rollout, moved, d.length, lw.anchor_window_weight,
                        anchor_row_weights(weight_table, y))
                g_losses["total"] = g_losses["total"] + lw.lambda_anchor * g_losses["anchor"]
        optimizer_step(opt_g, g_losses["total"], rate(o.lr_g, step))
        ema.update(gen, step)
        with torch.no_grad():
            acc = (unwrap(dg_ddp)(fake.detach(), y)[1].argmax(1) == y).float().mean()
        out = {f"d_{k}": float(v.detach()) for k, v in d_losses.items()}
        out.update({f"g_{k}": float(v.detach()) for k, v in g_losses.items()})
        out["class_accuracy"] = float(acc)
        return out

    def on_sample(done: int) -> Dict[str, float]:
        _plot_samples(ema.shadow, os.path.join(out_dir, "samples", f"step{done:07d}.png"), d.length, seed)
        return {}

    def on_checkpoint(done: int) -> None:
        export_component(out_dir, "expression_generator", ema.shadow, done, data_dir)

    run_steps(run_dir=out_dir, total_steps=total, step_fn=step_fn,
              modules={"generator": gen, "ema": ema.shadow, "d_global": d_g, "d_local": d_l},
              optimizers={"g": opt_g, "d": opt_d}, info=info, log=log, resume=resume,
              checkpoint_every=sched.checkpoint_every, log_every=sched.log_every,
              on_checkpoint=on_checkpoint, sample_every=sched.sample_every, on_sample=on_sample,
              desc="generator", stop_after=stop_after)
    return os.path.join(out_dir, "expression_generator.safetensors")


@torch.no_grad()
def _plot_samples(gen, path, length, seed):
    """One panel per emotion: the first 6 psi components of a generated sequence over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = torch.arange(len(EMOTIONS), device=next(gen.parameters()).device)
    seqs = gen(labels, length, generator=torch.Generator().manual_seed(seed)).cpu().numpy()
    fig, axes = plt.subplots(2, 4, figsize=(12, 5), sharey=True)
    for ax, emotion, s in zip(axes.flat, EMOTIONS, seqs):
        ax.plot(s[:, :10])
        ax.set_title(emotion, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)
