"""python -m training compare-portraits: voice-paired means, the shipping verdict and its refusals."""
import json

import pytest

from training.__main__ import main as training_main
from training.compare_portraits import ComparisonError, compare, compare_paired, read_report


def report(voice, lip, same=0.95, sharp=0.4, fer_sad=0.1, portraits=("a.jpg", "b.jpg"), seconds=10.0, complete=True,
           reinject=2, seed=0):
    return {"complete": complete, "checkpoint": "x.safetensors", "portraits": list(portraits),
            "audio": {"file": voice, "seconds_used": seconds},
            "emotions": ["neutral", "happy", "sad"], "intensity": 1.0, "seed": seed, "sampling": {"steps": 10},
            "reinject_identity_every": reinject, "superres": "head",
            "summary": {"face_share": 1.0, "same_person_share": same, "sharpness": sharp, "lipsync_r": lip,
                        "fer_reads_asked": {"neutral": 0.2, "happy": 0.9, "sad": fer_sad}}}


def test_means_over_voices_decide_not_one_voice():
    base = [report("v1.wav", 0.50), report("v2.wav", 0.30)]
    # worse on v1, better on v2: the mean over voices (0.40 -> 0.42) decides
    cand = [report("v2.wav", 0.44), report("v1.wav", 0.40)]
    result = compare(base, cand)
    assert result["voices"] == ["v1.wav", "v2.wav"]
    assert result["mean_over_voices"]["baseline"]["lipsync_r"] == pytest.approx(0.40)
    assert result["mean_over_voices"]["candidate"]["lipsync_r"] == pytest.approx(0.42)
    assert result["per_voice"]["v1.wav"]["candidate"]["lipsync_r"] == 0.40
    assert "fer_neutral" not in result["mean_over_voices"]["candidate"]      # neutral is not a kept FER measure
    assert result["candidate_at_least_as_good"] and result["worse"] == []


def test_a_measure_below_the_baseline_is_named_and_tolerance_forgives_it():
    base = [report("v1.wav", 0.5, same=0.92)]
    cand = [report("v1.wav", 0.6, same=0.90, fer_sad=0.3)]
    result = compare(base, cand)
    assert result["worse"] == ["same_person_share"] and not result["candidate_at_least_as_good"]
    assert compare(base, cand, tolerance=0.03)["candidate_at_least_as_good"]


def test_incomparable_reports_are_refused_with_what_differs(tmp_path):
    with pytest.raises(ComparisonError, match="different voices"):
        compare([report("v1.wav", 0.5)], [report("v2.wav", 0.5)])
    with pytest.raises(ComparisonError, match="portraits"):
        compare([report("v1.wav", 0.5)], [report("v1.wav", 0.5, portraits=("a.jpg",))])
    with pytest.raises(ComparisonError, match="reinject_identity_every"):
        compare([report("v1.wav", 0.5)], [report("v1.wav", 0.5, reinject=0)])
    # two ways of sampling one checkpoint: allowed by name, and the settings are reported
    sampled = report("v1.wav", 0.5)
    sampled["sampling"] = {"steps": 10, "start_noise": 0.7}
    with pytest.raises(ComparisonError, match="differ in sampling"):
        compare([report("v1.wav", 0.5)], [sampled])
    newer = report("v1.wav", 0.5)           # a report written after guidance_min_noise existed: its default
    newer["sampling"] = {"steps": 10, "guidance": 1.0, "guidance_min_noise": 0.0}
    assert compare([report("v1.wav", 0.5)], [newer])["candidate_at_least_as_good"]
    allowed = compare([report("v1.wav", 0.5)], [sampled], allow=["sampling"])
    assert allowed["settings"]["candidate"]["sampling"]["start_noise"] == 0.7 and allowed["candidate_at_least_as_good"]
    with pytest.raises(ComparisonError, match="--allow takes"):
        compare([report("v1.wav", 0.5)], [sampled], allow=["portraits"])
    # the mouth policy: a report without it (older) is the generator's mouth; voice against it needs --allow mouth
    generator, voice = report("v1.wav", 0.5), report("v1.wav", 0.6)
    generator["mouth"], voice["mouth"] = "generator", "voice"
    assert compare([report("v1.wav", 0.5)], [generator])["candidate_at_least_as_good"]
    with pytest.raises(ComparisonError, match="differ in mouth"):
        compare([report("v1.wav", 0.5)], [voice])
    assert compare([report("v1.wav", 0.5)], [voice], allow=["mouth"])["settings"]["candidate"]["mouth"] == "voice"
    # the start policy likewise: a report without it started every frame from the previous one
    previous, rig = report("v1.wav", 0.5), report("v1.wav", 0.6)
    previous["start_mouth"], rig["start_mouth"] = "previous", "rig"
    assert compare([report("v1.wav", 0.5)], [previous])["candidate_at_least_as_good"]
    with pytest.raises(ComparisonError, match="differ in start_mouth"):
        compare([report("v1.wav", 0.5)], [rig])
    allowed = compare([report("v1.wav", 0.5)], [rig], allow=["start_mouth"])
    assert allowed["settings"]["candidate"]["start_mouth"] == "rig"
    # and the expression generator's noise: a report without it shared one draw per seed
    shared, per_portrait = report("v1.wav", 0.5), report("v1.wav", 0.6)
    shared["expression_noise"], per_portrait["expression_noise"] = "shared", "per-portrait"
    assert compare([report("v1.wav", 0.5)], [shared])["candidate_at_least_as_good"]
    with pytest.raises(ComparisonError, match="differ in expression_noise"):
        compare([report("v1.wav", 0.5)], [per_portrait])
    assert compare([shared], [per_portrait], allow=["expression_noise"])["candidate_at_least_as_good"]
    with pytest.raises(ComparisonError, match="same voice"):
        compare([report("v1.wav", 0.5), report("v1.wav", 0.4)], [report("v1.wav", 0.5)])
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(report("v1.wav", 0.5, complete=False)))
    with pytest.raises(ComparisonError, match="did not finish"):
        read_report(str(path))
    (tmp_path / "other.json").write_text(json.dumps({"summary": {}}))
    with pytest.raises(ComparisonError, match="not an evaluate-portraits report"):
        read_report(str(tmp_path / "other.json"))


def test_command_line_prints_the_table_and_writes_json(tmp_path, capsys):
    paths = {}
    for side, lips in (("base", (0.5, 0.3)), ("cand", (0.45, 0.3))):
        for voice, lip in zip(("v1.wav", "v2.wav"), lips):
            paths[side, voice] = tmp_path / f"{side}_{voice}.json"
            paths[side, voice].write_text(json.dumps(report(voice, lip)))
    out = tmp_path / "cmp.json"
    code = training_main(["compare-portraits", "--baseline", str(paths["base", "v1.wav"]), str(paths["base", "v2.wav"]),
                          "--candidate", str(paths["cand", "v1.wav"]), str(paths["cand", "v2.wav"]), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "candidate worse on: lipsync_r" in printed and "0.400 / 0.375" in printed
    assert json.loads(out.read_text())["worse"] == ["lipsync_r"]
    assert training_main(["compare-portraits", "--baseline", str(tmp_path / "missing.json"),
                          "--candidate", str(out)]) == 2


def with_videos(voice, per_video, seed=0):
    """A report whose per-video results are ``per_video``: {(photo, emotion): (same_person, lip, fer_asked)}."""
    rep = report(voice, 0.5, seed=seed)
    photos = {}
    for (photo, emotion), (same, lip, fer) in per_video.items():
        photos.setdefault(photo, {})[emotion] = {"face_share": 1.0, "same_person_share": same, "sharpness": 0.6,
                                                 "lipsync_r": lip, "fer": {"asked": emotion, "asked_share": fer}}
    rep["results"] = [{"file": f"/some/dir/{photo}", "videos": videos} for photo, videos in photos.items()]
    return rep


def test_paired_verdict_reads_video_by_video_differences_against_their_standard_error():
    keys = [(p, e) for p in ("a.jpg", "b.jpg", "c.jpg") for e in ("neutral", "sad")]
    base = {k: (0.9, 0.5, 0.2) for k in keys}
    # lip sync 0.02 lower on every video (SE 0): worse; same person lower on one video only (-0.3 / 6 = -0.05,
    # SE 0.05): within 2 SE; sad FER +0.1 on each of the 3 sad videos
    cand = {k: (0.6 if k == ("a.jpg", "neutral") else 0.9, 0.48, 0.3) for k in keys}
    result = compare_paired([with_videos("v1.wav", base)], [with_videos("v1.wav", cand)])
    paired = result["paired"]
    assert result["videos"] == 6 and list(paired)[-1] == "fer_sad" and "fer_neutral" not in paired
    assert paired["lipsync_r"]["difference"] == pytest.approx(-0.02) and paired["lipsync_r"]["se"] == 0
    assert paired["same_person_share"]["difference"] == pytest.approx(-0.05)
    assert paired["same_person_share"]["se"] == pytest.approx(0.05)
    assert paired["fer_sad"] == {"baseline": 0.2, "candidate": 0.3, "difference": 0.1, "se": 0.0, "higher": 3,
                                 "videos": 3}
    assert result["worse"] == ["lipsync_r"] and not result["candidate_at_least_as_good"]
    assert result["by_emotion"]["neutral"]["same_person_share"]["difference"] == pytest.approx(-0.1)
    # one SE instead of two: same person's -0.05 is exactly -1 SE, not below it; 0.9 SE is
    assert compare_paired([with_videos("v1.wav", base)], [with_videos("v1.wav", cand)],
                          standard_errors=0.9)["worse"] == ["lipsync_r", "same_person_share"]
    with pytest.raises(ComparisonError, match="share no video"):
        compare_paired([with_videos("v1.wav", base)], [report("v1.wav", 0.5)])
    with pytest.raises(ComparisonError, match=">= 0"):
        compare_paired([with_videos("v1.wav", base)], [with_videos("v1.wav", cand)], standard_errors=-1)


def test_seeds_of_one_voice_pool_as_runs_paired_by_seed():
    keys = [("a.jpg", "sad"), ("b.jpg", "sad")]
    # seed 0: the candidate 0.1 higher on both videos; seed 1: 0.2 lower on both (its reports given in the other
    # order). Paired by seed: -0.05, SE 0.087 (within 2 SE)
    base = [with_videos("v1.wav", {k: (0.9, 0.5, 0.2) for k in keys}, seed=0),
            with_videos("v1.wav", {k: (0.9, 0.7, 0.2) for k in keys}, seed=1)]
    cand = [with_videos("v1.wav", {k: (0.9, 0.5, 0.2) for k in keys}, seed=1),
            with_videos("v1.wav", {k: (0.9, 0.6, 0.2) for k in keys}, seed=0)]
    result = compare_paired(base, cand)
    assert result["voices"] == ["v1.wav seed 0", "v1.wav seed 1"] and result["videos"] == 4
    lip = result["paired"]["lipsync_r"]
    assert lip["difference"] == pytest.approx(-0.05) and lip["higher"] == 2
    assert lip["se"] == pytest.approx(0.0866, abs=1e-4)
    assert result["candidate_at_least_as_good"]
    means = compare([report("v1.wav", 0.5, seed=0), report("v1.wav", 0.3, seed=1)],
                    [report("v1.wav", 0.45, seed=1), report("v1.wav", 0.5, seed=0)])
    assert means["per_voice"]["v1.wav seed 1"]["candidate"]["lipsync_r"] == 0.45
    assert means["mean_over_voices"]["candidate"]["lipsync_r"] == pytest.approx(0.475)
    # one seed throughout: runs are named by the voice alone, as before seeds pooled
    assert compare([report("v1.wav", 0.5, seed=3)], [report("v1.wav", 0.5, seed=3)])["voices"] == ["v1.wav"]
    with pytest.raises(ComparisonError, match=r"different voices or seeds: baseline \['v1.wav seed 0'\], "
                                              r"candidate \['v1.wav seed 1'\]"):
        compare([report("v1.wav", 0.5, seed=0)], [report("v1.wav", 0.5, seed=1)])
    with pytest.raises(ComparisonError, match="same voice 'v1.wav' and seed 1"):
        compare([report("v1.wav", 0.5, seed=1), report("v1.wav", 0.4, seed=1)], [report("v1.wav", 0.5, seed=1)])


def test_paired_command_line(tmp_path, capsys):
    keys = [("a.jpg", "sad"), ("b.jpg", "sad")]
    base, cand = tmp_path / "base.json", tmp_path / "cand.json"
    base.write_text(json.dumps(with_videos("v1.wav", {k: (0.9, 0.5, 0.2) for k in keys})))
    cand.write_text(json.dumps(with_videos("v1.wav", {k: (0.9, 0.6, 0.2) for k in keys})))
    out = tmp_path / "cmp.json"
    assert training_main(["compare-portraits", "--baseline", str(base), "--candidate", str(cand), "--paired", "2",
                          "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "+0.100 (0.000)" in printed and "within 2 SE of the baseline on every kept measure (2 paired" in printed
    assert json.loads(out.read_text())["paired"]["lipsync_r"]["higher"] == 2
    assert training_main(["compare-portraits", "--baseline", str(base), "--candidate", str(cand), "--paired", "2",
                          "--tolerance", "0.1"]) == 2
