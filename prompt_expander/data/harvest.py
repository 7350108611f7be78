"""`harvest`: collect the prompts stored in generated images (A1111 infotext, ComfyUI graphs, EXIF)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..fileio import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286


def split_a1111_parameters(text: str) -> tuple[str, str]:
    """(prompt, negative prompt) from A1111 infotext: prompt lines, 'Negative prompt: ...', settings line."""
    lines = text.strip().split("\n")
    if lines and lines[-1].startswith("Steps:") or (lines and "Steps: " in lines[-1] and "Sampler" in lines[-1]):
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt).strip(), "\n".join(negative).strip()


def comfy_prompts(graph: dict) -> tuple[list[str], list[str]]:
    """Positive and negative texts of a ComfyUI API-format graph ("prompt" PNG chunk)."""
    if not isinstance(graph, dict):
        return [], []
    nodes = {k: v for k, v in graph.items() if isinstance(v, dict)}

    def texts(node_id) -> list[str]:
        node = nodes.get(str(node_id), {})
        inputs = node.get("inputs", {}) if isinstance(node.get("inputs"), dict) else {}
        if "CLIPTextEncode" not in str(node.get("class_type", "")):
            # follow conditioning through combine/concat/set-area style nodes
            out = []
            for v in inputs.values():
                if isinstance(v, list) and v and str(v[0]) in nodes:
                    out += texts(v[0])
            return out
        vals = [v for k, v in inputs.items() if k.startswith("text") and isinstance(v, str) and v.strip()]
        return list(dict.fromkeys(vals))

    pos, neg = [], []
    for node in nodes.values():
        inputs = node.get("inputs", {}) if isinstance(node.get("inputs"), dict) else {}
        for key, bucket in (("positive", pos), ("negative", neg)):
            link = inputs.get(key)
            if isinstance(link, list) and link:
                bucket += texts(link[0])
    if not pos and not neg:  # no sampler: every text encoder counts as a prompt
        for node_id in nodes:
            pos += texts(node_id) if "CLIPTextEncode" in str(nodes[node_id].get("class_type", "")) else []
    return list(dict.fromkeys(pos)), list(dict.fromkeys(neg))


def decode_user_comment(raw) -> str:
    """EXIF UserComment: an 8-byte charset header, then the text (A1111 writes UNICODE, i.e. UTF-16)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes):
        return ""
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        candidates = [body.decode(enc, "ignore") for enc in ("utf-16-be", "utf-16-le")]
        return max(candidates, key=lambda t: sum(c.isascii() and (c.isprintable() or c == "\n") for c in t))
    if head.startswith(b"ASCII"):
        return body.decode("ascii", "ignore")
    return raw.decode("utf-8", "ignore")


def image_prompts(path: Path) -> tuple[list[str], list[str]]:
    """(prompts, negative prompts) stored in one image; unreadable images give nothing."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            info = dict(getattr(im, "text", {}) or {})
            info.update({k: v for k, v in im.info.items() if isinstance(v, str)})
            exif = im.getexif()
            comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT) if exif else None
    except Exception:
        return [], []
    if "parameters" in info:
        p, n = split_a1111_parameters(info["parameters"])
        return ([p] if p else []), ([n] if n else [])
    if "prompt" in info:
        try:
            return comfy_prompts(json.loads(info["prompt"]))
        except ValueError:
            return [], []
    if comment:
        p, n = split_a1111_parameters(decode_user_comment(comment))
        return ([p] if p else []), ([n] if n else [])
    return [], []


def harvest(folder, out, negatives_out=None) -> dict:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else [folder]
    prompts, negatives, with_prompt = [], [], 0
    from tqdm import tqdm
    for f in tqdm(files, desc="harvest", unit=" images"):
        p, n = image_prompts(f)
        with_prompt += bool(p)
        prompts += p
        negatives += n
    prompts = list(dict.fromkeys(" ".join(x.split()) for x in prompts))
    negatives = list(dict.fromkeys(" ".join(x.split()) for x in negatives))
    with atomic_path(out) as tmp:
        tmp.write_text("".join(x + "\n" for x in prompts), encoding="utf-8")
    if negatives_out:
        with atomic_path(negatives_out) as tmp:
            tmp.write_text("".join(x + "\n" for x in negatives), encoding="utf-8")
    return {"images": len(files), "with_prompt": with_prompt, "prompts": len(prompts), "negatives": len(negatives)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of generated images (searched recursively)")
    p.add_argument("--out", required=True, help="prompts file to write (one per line), for `prepare`")
    p.add_argument("--negatives", help="also write the negative prompts to this file")


def main(args) -> int:
    stats = harvest(args.folder, args.out, args.negatives)
    print(f"{stats['images']} images, {stats['with_prompt']} with a prompt; wrote {stats['prompts']} prompts to {args.out}")
    return 0
