"""`make-sheet` / `score-sheet`: blinded human rating of quality and faithfulness (1-4 Likert)."""
from __future__ import annotations

import argparse
import csv
import html
import io
import itertools
import json
import random
from pathlib import Path

from ..errors import DataError
from ..fileio import iter_lines, write_json_atomic, write_report, write_text_atomic
from .metrics import mean_std, weighted_kappa

QUESTIONS = ("quality", "faithfulness")
SCALE = (1, 2, 3, 4)


def parse_system(spec: str) -> dict:
    """'none' | 'name=photo,model=PATH,lora=photo:0.8,temperature=0.7' -> dict."""
    if spec.strip() == "none":
        return {"name": "none", "none": True}
    out = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if not value:
            raise DataError(f"bad --system item {part!r}; use key=value pairs or 'none'")
        out[key.strip()] = value.strip()
    out.setdefault("name", out.get("lora", out.get("model", "default")))
    return out


def system_outputs(system: dict, inputs: list[str], seed: int) -> list[str]:
    if system.get("none"):
        return list(inputs)
    from ..expansion.resident import load_expander
    exp = load_expander(system.get("model"), system.get("device", "cpu"))
    styles = [system["lora"]] if system.get("lora") else []
    kw = {k: float(system[k]) for k in ("temperature", "top_p") if k in system}
    return [exp.expand(text, seed, styles=styles, **kw).text for text in inputs]


def make_sheet(inputs: list[str], systems: list[dict], out: Path, seed: int = 0) -> dict:
    items = []
    for system in systems:
        for i, (text, prompt) in enumerate(zip(inputs, system_outputs(system, inputs, seed))):
            items.append({"system": system["name"], "input_index": i, "input": text, "prompt": prompt})
    random.Random(seed).shuffle(items)
    for n, item in enumerate(items, 1):
        item["id"] = f"r{n:04d}"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "key.json", {it["id"]: {"system": it["system"], "input_index": it["input_index"]}
                                         for it in items})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "concept", "prompt", *QUESTIONS])
    for it in items:
        w.writerow([it["id"], it["input"], it["prompt"], "", ""])
    write_text_atomic(out / "sheet.csv", buf.getvalue())
    write_text_atomic(out / "sheet.html", _html(items))
    return {"items": len(items), "systems": [s["name"] for s in systems]}


def _html(items) -> str:
    rows = []
    for it in items:
        cells = "".join(
            "<td>" + " ".join(f'<label><input type="radio" name="{it["id"]}-{q}" value="{v}">{v}</label>' for v in SCALE)
            + "</td>" for q in QUESTIONS)
        rows.append(f'<tr data-id="{it["id"]}"><td>{it["id"]}</td><td>{html.escape(it["input"])}</td>'
                    f'<td>{html.escape(it["prompt"])}</td>{cells}</tr>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Prompt rating sheet</title>
<style>body{{font-family:sans-serif;margin:1em}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse}}label{{margin-right:6px}}</style></head><body>
<h1>Rate each prompt</h1>
<p><b>Quality</b>: would this prompt give a good image? <b>Faithfulness</b>: does it stay true to the concept?
1 = poor, 4 = excellent. The systems are hidden and the rows are shuffled.</p>
<p>Your name: <input id="rater"> <button onclick="save()">Save CSV</button> <span id="left"></span></p>
<table><tr><th>id</th><th>concept</th><th>prompt</th><th>quality</th><th>faithfulness</th></tr>
{''.join(rows)}</table>
<script>
function val(id,q){{const e=document.querySelector('input[name="'+id+'-'+q+'"]:checked');return e?e.value:'';}}
function esc(s){{return '"'+String(s).replace(/"/g,'""')+'"';}}
function save(){{
  const lines=['id,concept,prompt,quality,faithfulness'];let missing=0;
  document.querySelectorAll('tr[data-id]').forEach(tr=>{{const id=tr.dataset.id;const c=tr.children;
    const q=val(id,'quality'),f=val(id,'faithfulness');if(!q||!f)missing++;
    lines.push([id,esc(c[1].textContent),esc(c[2].textContent),q,f].join(','));}});
  document.getElementById('left').textContent=missing?missing+' rows still unrated':'all rated';
  const a=document.createElement('a');a.href=URL.createObjectURL(new Blob([lines.join('\\n')+'\\n'],{{type:'text/csv'}}));
  a.download='ratings-'+(document.getElementById('rater').value||'rater')+'.csv';a.click();}}
</script></body></html>
"""


def read_ratings(path: Path, allow_missing: bool) -> dict:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    ratings, missing = {}, []
    for row in rows:
        rid = row.get("id", "")
        try:
            q = {k: int(row[k]) for k in QUESTIONS}
            if not all(v in SCALE for v in q.values()):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            missing.append(rid)
            continue
        ratings[rid] = q
    if missing and not allow_missing:
        raise DataError(f"{path}: {len(missing)} rows lack a 1-4 rating for quality and faithfulness "
                        f"(first: {', '.join(missing[:5])}); fill them in or pass --allow-missing")
    return ratings


def score_sheets(key: dict, rating_files: list[Path], allow_missing=False, kappa_weights="linear") -> dict:
    raters = {Path(f).stem: read_ratings(Path(f), allow_missing) for f in rating_files}
    systems = sorted({v["system"] for v in key.values()})
    per_system = {}
    for system in systems:
        ids = [i for i, v in key.items() if v["system"] == system]
        per_system[system] = {}
        for q in QUESTIONS:
            vals = [r[i][q] for r in raters.values() for i in ids if i in r]
            m, s = mean_std(vals)
            per_system[system][q] = {"mean": m, "std": s, "n": len(vals)}
    kappas = []
    for (na, a), (nb, b) in itertools.combinations(raters.items(), 2):
        shared = sorted(set(a) & set(b) & set(key))
        if shared:
            kappas.append({"raters": [na, nb], "n": len(shared), **{
                q: weighted_kappa([a[i][q] for i in shared], [b[i][q] for i in shared], SCALE, kappa_weights)
                for q in QUESTIONS}})
    return {"systems": per_system, "kappa": kappas, "kappa_weights": kappa_weights, "raters": list(raters)}


def markdown(result: dict) -> str:
    lines = ["| system | quality (mean ± σ) | faithfulness (mean ± σ) | ratings |", "|---|---:|---:|---:|"]
    for name, r in result["systems"].items():
        lines.append(f"| {name} | {r['quality']['mean']:.2f} ± {r['quality']['std']:.2f} | "
                     f"{r['faithfulness']['mean']:.2f} ± {r['faithfulness']['std']:.2f} | {r['quality']['n']} |")
    if result["kappa"]:
        lines += ["", f"| raters | n | κ quality | κ faithfulness |  ({result['kappa_weights']} weights)",
                  "|---|---:|---:|---:|"]
        lines += [f"| {' vs '.join(k['raters'])} | {k['n']} | {k['quality']:.3f} | {k['faithfulness']:.3f} |"
                  for k in result["kappa"]]
    return "\n".join(lines) + "\n"


def add_arguments_make_sheet(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", help="file of short concepts, one per line")
    p.add_argument("--system", action="append", required=True,
                   help="'none' or key=value list: name=,model=,lora=,temperature= (repeat per system)")
    p.add_argument("--out", required=True, help="folder for sheet.html, sheet.csv and the blinding key.json")
    p.add_argument("--limit", type=int, default=50, help="use the first N concepts (default 50)")
    p.add_argument("--seed", type=int, default=0, help="expansion seed and shuffle seed")


def main_make_sheet(args) -> int:
    inputs = list(itertools.islice(iter_lines(args.inputs, strict=True), args.limit))
    if not inputs:
        raise DataError(f"{args.inputs}: no concepts")
    r = make_sheet(inputs, [parse_system(s) for s in args.system], Path(args.out), args.seed)
    print(f"wrote {r['items']} rows for {', '.join(r['systems'])} to {args.out} (sheet.html, sheet.csv, key.json)")
    return 0


def add_arguments_score_sheet(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", help="key.json written by make-sheet")
    p.add_argument("ratings", nargs="+", help="filled CSVs, one per rater (file name = rater name)")
    p.add_argument("--allow-missing", action="store_true", help="skip unrated rows instead of failing")
    p.add_argument("--kappa-weights", choices=["linear", "quadratic"], default="linear")
    p.add_argument("--json", help="write the result as JSON here")
    p.add_argument("--markdown", help="write the tables as Markdown here")


def main_score_sheet(args) -> int:
    key = json.loads(Path(args.key).read_text(encoding="utf-8"))
    result = score_sheets(key, args.ratings, args.allow_missing, args.kappa_weights)
    table = markdown(result)
    write_report(result, table, args.json, args.markdown)
    return 0


add_arguments = add_arguments_make_sheet
main = main_make_sheet
