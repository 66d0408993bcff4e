#!/usr/bin/env bash
# Reproduces the shipped bundles from nothing, on a CPU: stage 1, checkpoints/emodiffhead_procedural.safetensors (the
# demo until 2026-12-05; about 4 h on 2 cores, the denoiser most of it); stage 2, emodiffhead_emotion.safetensors;
# stage 3, emodiffhead_real.safetensors; stage 4, the demo, emodiffhead_demo.safetensors (stage 3's generator, SR head
# and regressor with its denoiser fine-tuned three times on corpus version 4; stages 3 and 4 need the real faces and voices,
# REALFACES and REALSPEECH). DATA and RUNS may be set; the defaults are outside the repository.
# Stage 1 was trained on procedural corpus version 1 (the corpus code before commit 0e4ee30), the first part of
# stage 2 and stage 3's SR head on version 2, the last part of stage 2 (and its generator) and stage 3's denoiser
# on version 3 (sad re-tuned, training/README.md section 1), stage 4 on version 4 (surprised re-tuned, teeth covered
# by rounded lips), which the corpus command renders now: rerunning stages 1-3 trains them on version-4 faces, close
# to, not byte-identical with, the shipped components
# (generator step 3000 on v1 is replaced in stage 2; SR head and regressor are kept). The folder names below keep
# "v2".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
DATA=${DATA:-../emodiffhead-data}
RUNS=${RUNS:-../emodiffhead-runs}

# the regressor and the emotion judge need many faces to generalise to unseen ones: 1024 identities (768 in the
# train split; the test identities are the same people as corpus64's, index mod 8 = 7, and are never trained on)
wide_corpus() {
    $PY -m training corpus --out "$DATA/corpus64_wide" --clips 1024 --identities 1024 --seed 0 --size 64 --workers 2
}
# The emotion stage (issue 9) renders corpus version 2 (FACS emotion directions, shading, counterfactual twins).
emotion_corpora() {
    $PY -m training corpus --out "$DATA/corpus64v2" --clips 640 --identities 64 --seed 0 --size 64 --workers 2
    # the judge needs many faces, each in several emotions: 200 identities x 8 clips (test identities, index
    # mod 8 = 7, are the same people as corpus64v2's and are never trained on)
    $PY -m training corpus --out "$DATA/judge64v2" --clips 1600 --identities 200 --seed 0 --size 64 --workers 2
}
# checkpoints/emotion_judge.safetensors, the classifier `evaluate` judges generated emotions with (not part of the
# bundle). `training/make_demo_checkpoint.sh judge` retrains only it; after a change of the corpus generator give
# new DATA and RUNS folders (clips and runs already there are kept and resumed, not redone).
train_judge() {
    $PY -m training train judge --config training/configs/judge_demo.json --data "$DATA/judge64v2" --out "$RUNS/judge" --resume
    cp "$RUNS/judge/emotion_judge.safetensors" checkpoints/emotion_judge.safetensors
}
# checkpoints/psi_regressor_v3.safetensors, the psi regressor `evaluate --regressor` measures FLIE, lip sync and the
# psi emotion accuracy with (not part of the bundles, which keep their own): the stage-1 recipe on version-3 faces,
# with half of the training images blurred as generated frames are (regressor_v3.json; 3,000 steps, 30 min on 2
# threads), on the wide corpus, which today's corpus code renders as version 3 (the shipped file's folder was named
# corpus64v3_wide, the same command). `training/make_demo_checkpoint.sh regressor` retrains only it.
train_psi_regressor() {
    wide_corpus
    $PY -m training train regressor --config training/configs/regressor_v3.json --data "$DATA/corpus64_wide" \
        --out "$RUNS/regressor_v3" --resume
    cp "$RUNS/regressor_v3/regressor.safetensors" checkpoints/psi_regressor_v3.safetensors
}
if [ "${1:-all}" = judge ]; then
    emotion_corpora
    train_judge
    exit 0
fi
if [ "${1:-all}" = regressor ]; then
    train_psi_regressor
    exit 0
fi

$PY -m training corpus --out "$DATA/corpus64" --clips 960 --identities 64 --seed 0 --size 64 --workers 2 --contact-sheet
$PY -m training corpus --out "$DATA/corpus128" --clips 160 --identities 64 --seed 0 --size 128 --workers 2
wide_corpus
# The shipped denoiser and regressor are the step-6500 and step-2500 checkpoints of 12000- and 4000-step
# schedules (see checkpoints/MODEL_CARD.md); --stop-after reproduces exactly that. Drop it to train fully.
# The bundle recommends identity re-injection every 2 frames (`evaluate` and `evaluate-portraits` with and
# without it; checkpoints/MODEL_CARD.md).
$PY -m training train generator --config training/configs/generator_demo.json --data "$DATA/corpus64" --out "$RUNS/generator" --resume
$PY -m training train denoiser --config training/configs/denoiser_demo.json --data "$DATA/corpus64" --out "$RUNS/denoiser" --resume --stop-after 6500
$PY -m training train regressor --config training/configs/regressor_demo.json --data "$DATA/corpus64_wide" --out "$RUNS/regressor" --resume --stop-after 2500
$PY -m training train superres --config training/configs/superres_demo.json --data "$DATA/corpus128" --out "$RUNS/superres" --resume
$PY -m training export "$RUNS/denoiser/denoiser.safetensors" "$RUNS/generator/expression_generator.safetensors" \
    "$RUNS/superres/superres.safetensors" "$RUNS/regressor/regressor.safetensors" \
    --card checkpoints/MODEL_CARD.md --reinject-identity-every 2 --out checkpoints/emodiffhead_procedural.safetensors
# Stage 2, emotion (issue 9): the expression generator retrained on corpus v2 (its emotion directions), the
# stage-1 denoiser fine-tuned with the emotion recipe (training/configs/denoiser_emotion.json: counterfactual
# twins, emotion-region loss, standardised psi, spatial expression map, expression dropout for guidance),
# the judge; SR head and regressor as in stage 1. The shipped denoiser ran 2,000 steps, stopped (session end),
# and finished the remaining 2,000 with --resume from its saved state: the same updates as one run.
emotion_corpora
$PY -m training train generator --config training/configs/generator_demo.json --data "$DATA/corpus64v2" --out "$RUNS/generator_v2" --resume
$PY -m training train denoiser --config training/configs/denoiser_emotion.json --data "$DATA/corpus64v2" \
    --out "$RUNS/denoiser_emotion" --init-from "$RUNS/denoiser/denoiser.safetensors" --resume
train_judge
# The shipped emotion denoiser is that one fine-tuned on corpus version 3 (sad re-tuned): 3,000 steps of a
# 5,000-step schedule (session end), then a fresh 2,000-step schedule at about the learning rate where the first
# stopped (training/checkpoints/README.md); the generator is the one retrained on version-3 faces (here
# generator_v2, whose corpus folder holds version 3 when rendered by today's code).
$PY -m training train denoiser --config training/configs/denoiser_emotion_v3.json --data "$DATA/corpus64v2" \
    --out "$RUNS/denoiser_emotion_v3" --init-from "$RUNS/denoiser_emotion/denoiser.safetensors" --resume --stop-after 3000
$PY -m training train denoiser --config training/configs/denoiser_emotion_v3b.json --data "$DATA/corpus64v2" \
    --out "$RUNS/denoiser_emotion_v3b" --init-from "$RUNS/denoiser_emotion_v3/denoiser.safetensors" --resume
# Then same-emotion twins (half of an emotional clip's emotional twins show its own emotion at another k): 3,000
# steps (denoiser_emotion_k.json), then a fresh 2,000-step schedule with fresh draws (denoiser_emotion_k2.json).
# Sampled with guidance 2 and the portrait re-injected every 2 frames (without it, videos longer than about a
# second come apart; checkpoints/MODEL_CARD.md).
$PY -m training train denoiser --config training/configs/denoiser_emotion_k.json --data "$DATA/corpus64v2" \
    --out "$RUNS/denoiser_emotion_k" --init-from "$RUNS/denoiser_emotion_v3b/denoiser.safetensors" --resume
$PY -m training train denoiser --config training/configs/denoiser_emotion_k2.json --data "$DATA/corpus64v2" \
    --out "$RUNS/denoiser_emotion_k2" --init-from "$RUNS/denoiser_emotion_k/denoiser.safetensors" --resume
$PY -m training export "$RUNS/denoiser_emotion_k2/denoiser.safetensors" "$RUNS/generator_v2/expression_generator.safetensors" \
    "$RUNS/superres/superres.safetensors" "$RUNS/regressor/regressor.safetensors" \
    --card checkpoints/MODEL_CARD.md --guidance 2 --reinject-identity-every 2 --out checkpoints/emodiffhead_emotion.safetensors
# Stage 3, real textures (issue 10): needs the collected real faces and voices (training/README.md section 1b;
# REALFACES and REALSPEECH folders, outside the repository). The SR head is trained on 128 px real-texture +
# procedural frames with blurred inputs and a texture term that asks for the photo's amount of fine detail
# (superres_texture.json; until 2026-12-02 late the bundle held superres_real.json's head, pixels only). The
# shipped denoiser is the stage-2 (emotion) denoiser fine-tuned 2,000 steps on procedural + real-texture clips of
# corpus version 3 with the emotion recipe (denoiser_emotion_real.json); it is sampled without guidance (guidance 2
# turns a photo's sad and surprised into the procedural face's) and with the portrait re-injected every 2 frames.
# The previous real checkpoint (until 2026-12-02) was the first emotion denoiser fine-tuned 3,000 steps with
# denoiser_real.json on version 2. Since 2026-12-03 (evening) its SR head has two heads: the lips-masked sliding
# texture head (superres_texture_lips.json) everywhere and the superres_texture.json head around the mouth
# (export --superres-mouth-from; SuperResConfig.mouth_branch); sampling recommends audio guidance 2 and
# re-injection at every frame.
if [ -n "${REALFACES:-}" ]; then
    $PY -m training corpus --out "$DATA/real64" --clips 512 --identities 128 --seed 0 --size 64 --workers 2 \
        --real-faces "$REALFACES" --real-speech "$REALSPEECH" --contact-sheet
    $PY -m training corpus --out "$DATA/real128" --clips 192 --identities 96 --seed 1 --size 128 --workers 2 \
        --real-faces "$REALFACES" --real-speech "$REALSPEECH"
    $PY -m training corpus --out "$DATA/proc128" --clips 192 --identities 96 --seed 1 --size 128 --workers 2
    $PY -m training train superres --config training/configs/superres_texture.json --data "$DATA/real128" "$DATA/proc128" \
        --out "$RUNS/superres_texture" --resume
    $PY -m training train superres --config training/configs/superres_texture_lips.json --data "$DATA/real128" "$DATA/proc128" \
        --out "$RUNS/superres_texture_lips" --resume
    $PY -m training train denoiser --config training/configs/denoiser_emotion_real.json --data "$DATA/corpus64v2" "$DATA/real64" \
        --out "$RUNS/denoiser_emotion_real" --init-from "$RUNS/denoiser_emotion_k2/denoiser.safetensors" --resume
    $PY -m training export "$RUNS/denoiser_emotion_real/denoiser.safetensors" "$RUNS/generator_v2/expression_generator.safetensors" \
        "$RUNS/superres_texture_lips/superres.safetensors" "$RUNS/regressor/regressor.safetensors" \
        --superres-mouth-from "$RUNS/superres_texture/superres.safetensors" \
        --card checkpoints/MODEL_CARD.md --guidance 1 --reinject-identity-every 1 --audio-guidance 2 --out checkpoints/emodiffhead_real.safetensors
    # Stage 4, the demo (since 2026-12-05): both corpora rendered again as version 4 (the commands and seeds of
    # corpus64v2 and real64), stage 3's denoiser fine-tuned 1,000 steps on them with its own recipe
    # (denoiser_emotion_real_v4.json), then 1,000 steps with the motion-frame blur on the real-texture clips only
    # (denoiser_emotion_real_v4_blur_real.json: the demo from the first replacement), then 1,000 steps with the
    # emotion's emphasis, a texture term on the predicted x0 and no expression dropout
    # (denoiser_emotion_real_v4_emph_tex4_nodrop.json: the demo from the second), then 1,000 steps from that with 30 %
    # of the examples started from the previous frame diffused (denoiser_emotion_real_v4_emph_tex4_nodrop_as30.json),
    # the last two averaged at weight 0.5 (the demo since the third, 2026-12-06), exported with stage 3's generator,
    # SR head and regressor and its recommendation (checkpoints/MODEL_CARD.md, "Why the average replaced the
    # no-dropout arm").
    $PY -m training corpus --out "$DATA/corpus64v4" --clips 640 --identities 64 --seed 0 --size 64 --workers 2
    $PY -m training corpus --out "$DATA/real64v4" --clips 512 --identities 128 --seed 0 --size 64 --workers 2 \
        --real-faces "$REALFACES" --real-speech "$REALSPEECH"
    $PY -m training train denoiser --config training/configs/denoiser_emotion_real_v4.json --data "$DATA/corpus64v4" "$DATA/real64v4" \
        --out "$RUNS/denoiser_emotion_real_v4" --init-from "$RUNS/denoiser_emotion_real/denoiser.safetensors" --resume
    $PY -m training train denoiser --config training/configs/denoiser_emotion_real_v4_blur_real.json \
        --data "$DATA/corpus64v4" "$DATA/real64v4" --out "$RUNS/denoiser_emotion_real_v4_blur_real" \
        --init-from "$RUNS/denoiser_emotion_real_v4/denoiser.safetensors" --resume
    $PY -m training train denoiser --config training/configs/denoiser_emotion_real_v4_emph_tex4_nodrop.json \
        --data "$DATA/corpus64v4" "$DATA/real64v4" --out "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop" \
        --init-from "$RUNS/denoiser_emotion_real_v4_blur_real/denoiser.safetensors" --resume
    $PY -m training train denoiser --config training/configs/denoiser_emotion_real_v4_emph_tex4_nodrop_as30.json \
        --data "$DATA/corpus64v4" "$DATA/real64v4" --out "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop_as30" \
        --init-from "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop/denoiser.safetensors" --resume
    $PY -m training average "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop/denoiser.safetensors" \
        "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop_as30/denoiser.safetensors" --weight 0.5 \
        --out "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop_as30avg.safetensors"
    $PY -m training export "$RUNS/denoiser_emotion_real_v4_emph_tex4_nodrop_as30avg.safetensors" \
        --base checkpoints/emodiffhead_real.safetensors \
        --card checkpoints/MODEL_CARD.md --guidance 1 --reinject-identity-every 1 --audio-guidance 2 --out checkpoints/emodiffhead_demo.safetensors
fi
train_psi_regressor
$PY -m training evaluate --checkpoints checkpoints --data "$DATA/corpus64v2" --split test --guidance 1,2,3 --json
