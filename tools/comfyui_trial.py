"""Try the node pack inside a real, running ComfyUI through its HTTP API, and print what held and what did not.

Setup (once; nothing here is run by CI):

    # a ComfyUI checkout with this repository cloned into custom_nodes/, its requirements and ours installed,
    # a checkpoint in models/checkpoints (any SD1.5-shaped one; random weights will do), then:
    python main.py --cpu --listen 127.0.0.1 --port 8188
    python tools/comfyui_trial.py --checkpoint random-sd15.safetensors --output-dir ~/ComfyUI/output

The checks: the five nodes are registered; Expand Prompt gives the text the core gives at the same settings;
Expand Prompt + Encode gives the pixels of Expand Prompt -> CLIPTextEncode; the saved PNG holds expanded_text
in its prompt and workflow; an unchanged rerun is all cache hits; the model comes back after POST /free with
the same text; POST /interrupt stops a long run and the server goes on; a MODEL wired into `expander` is
refused at validation; the example workflows run.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUR_NODES = {"LoadPromptExpander", "ApplyExpanderStyle", "ExpandPrompt", "ExpandPromptEncode", "ExpandPromptVariations"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


class Server:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path) as r:
            return json.load(r)

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            return {"http_error": e.code, "body": json.loads(e.read() or b"{}")}
        return json.loads(body) if body.strip() else {}

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 600) -> dict:
        """Queue an API prompt and wait for its history entry (or the validation refusal)."""
        extra = {"extra_pnginfo": {"workflow": workflow}} if workflow else {}
        queued = self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4()), "extra_data": extra})
        if "prompt_id" not in queued:
            return queued
        pid, start = queued["prompt_id"], time.time()
        while time.time() - start < timeout:
            entry = self.get(f"/history/{pid}").get(pid)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.3)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s")


def cached_nodes(entry: dict) -> set[str]:
    return {n for kind, msg in entry["status"]["messages"] if kind == "execution_cached" for n in msg["nodes"]}


def saved_images(entry: dict, output_dir: Path, node: str) -> list[Path]:
    return [output_dir / img.get("subfolder", "") / img["filename"] for img in entry["outputs"][node]["images"]]


def api_prompt(workflow: dict, object_info: dict) -> dict:
    """A saved UI workflow as an API prompt, widget values read in the server's own input order."""
    links = {link[0]: (str(link[1]), link[2]) for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        spec = object_info[node["type"]]["input"]
        values, inputs = list(node.get("widgets_values", [])), {}
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, (kind, *options) in {**spec.get("required", {}), **spec.get("optional", {})}.items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                inputs[name] = values.pop(0)
                if options and options[0].get("control_after_generate"):
                    values.pop(0)
            if name in linked:
                inputs[name] = list(linked[name])
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8188")
    p.add_argument("--checkpoint", required=True, help="a file in the server's models/checkpoints")
    p.add_argument("--output-dir", required=True, type=Path, help="the server's output folder")
    args = p.parse_args(argv)
    server, results = Server(args.url), []

    def check(name: str, ok: bool, detail=""):
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}", flush=True)

    info = server.get("/object_info")
    check("the five nodes are registered", OUR_NODES <= set(info), sorted(OUR_NODES - set(info)))
    loader = {"class_type": "LoadPromptExpander", "inputs": {"model": "default (bundled)", "device": "auto",
                                                             "dtype": "auto"}}
    expand = {"expander": ["2", 0], "text": "a lemon", "seed": 11, "creativity": 0.8, "budget": 0,
              "safe_mode": True, "contrast": 1.0, "candidates": 1}

    def sampled(positive: list, extra: dict) -> dict:
        return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": args.checkpoint}}, "2": loader,
                "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
                "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "6": {"class_type": "KSampler", "inputs": {
                    "model": ["1", 0], "seed": 0, "steps": 1, "cfg": 7.0, "sampler_name": "euler",
                    "scheduler": "normal", "positive": positive, "negative": ["4", 0], "latent_image": ["5", 0],
                    "denoise": 1.0}},
                "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
                "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "pe_trial"}},
                **extra}

    from PIL import Image

    from prompt_expander.expansion.resident import load_expander
    want = load_expander("default").expand("a lemon", seed=11, contrast=1.0).text
    encoded = sampled(["3", 0], {"3": {"class_type": "ExpandPromptEncode", "inputs": dict(expand, clip=["1", 1])}})
    workflow = {"nodes": [{"id": int(k), "type": v["class_type"]} for k, v in encoded.items()], "links": []}
    first = server.run(encoded, workflow)
    check("Expand Prompt + Encode runs", first["status"]["status_str"] == "success")
    encoded_text = first["outputs"]["3"]["text"][0]
    png = Image.open(saved_images(first, args.output_dir, "8")[0])
    in_prompt = json.loads(png.info["prompt"])["3"]["inputs"].get("expanded_text")
    in_workflow = [n.get("properties", {}).get("expanded_text") for n in json.loads(png.info["workflow"])["nodes"]
                   if n["id"] == 3]
    check("the PNG's prompt and workflow hold expanded_text",
          in_prompt == encoded_text and in_workflow == [encoded_text])
    encode_it = {"class_type": "CLIPTextEncode", "inputs": {"text": ["11", 0], "clip": ["1", 1]}}
    split = sampled(["10", 0], {"11": {"class_type": "ExpandPrompt", "inputs": dict(expand)}, "10": encode_it})
    second = server.run(split)
    got = second["outputs"]["11"]["text"][0]
    check("Expand Prompt's text is the core's at the same settings", got == want, got)
    check("Encode gives the pixels of Expand Prompt -> CLIPTextEncode",
          Image.open(saved_images(first, args.output_dir, "8")[0]).tobytes()
          == Image.open(saved_images(second, args.output_dir, "8")[0]).tobytes())
    rerun = server.run(split)
    check("an unchanged rerun is all cache hits", cached_nodes(rerun) == set(split), sorted(cached_nodes(rerun)))
    server.post("/free", {"unload_models": True, "free_memory": True})
    # a seed not run before, so that the node runs rather than answering from ComfyUI's cache
    after_free = server.run({"2": loader, "11": {"class_type": "ExpandPrompt", "inputs": dict(expand, seed=12)},
                             "12": {"class_type": "PreviewAny", "inputs": {"source": ["11", 0]}}})
    want_12 = load_expander("default").expand("a lemon", seed=12, contrast=1.0).text
    check("after POST /free the model comes back and gives the core's text",
          after_free["status"]["status_str"] == "success" and "11" not in cached_nodes(after_free)
          and after_free["outputs"]["11"]["text"] == [want_12])
    miswired = {"class_type": "ExpandPrompt", "inputs": dict(expand, expander=["1", 0])}
    wrong = server.run({"1": encoded["1"], "11": miswired,
                        "12": {"class_type": "PreviewAny", "inputs": {"source": ["11", 0]}}})
    check("a MODEL wired into expander is refused at validation", wrong.get("http_error") == 400)
    long_run = {"2": loader, "13": {"class_type": "ExpandPromptVariations",
                                    "inputs": dict(expand, text="a castle", variations=64, candidates=8)},
                "12": {"class_type": "PreviewAny", "inputs": {"source": ["13", 0]}}}
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(entry=server.run(long_run)))
    worker.start()
    time.sleep(3)
    asked = time.time()
    server.post("/interrupt", {})
    worker.join()
    kinds = [kind for kind, _ in done["entry"]["status"]["messages"]]
    check("POST /interrupt stops a long run", "execution_interrupted" in kinds, f"{time.time() - asked:.1f} s")
    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        flow = json.loads(path.read_text())
        prompt = api_prompt(flow, info)
        for node in prompt.values():
            if node["class_type"] == "CheckpointLoaderSimple":
                node["inputs"]["ckpt_name"] = args.checkpoint
            if node["class_type"] == "EmptyLatentImage":
                node["inputs"].update(width=64, height=64)
            if node["class_type"] == "KSampler":
                node["inputs"]["steps"] = 1
        entry = server.run(prompt, flow)
        check(f"example workflow {path.name} runs", entry.get("status", {}).get("status_str") == "success")
    print(f"{sum(results)} of {len(results)} checks held")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
