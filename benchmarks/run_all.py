"""Run every benchmark: decode speed vs stock generate(), load/warm/RSS, training throughput vs HF Trainer."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decode  # noqa: E402
import bench_load  # noqa: E402
import bench_train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="folder for the JSON results")
    args = ap.parse_args()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    j = (lambda name: str(out / name)) if out else (lambda name: None)
    print("== decode ==")
    bench_decode.main(["--device", args.device, *(["--json", j("decode.json")] if out else [])])
    if args.device == "cuda":
        bench_decode.main(["--device", "cuda", "--dtype", "fp16", *(["--json", j("decode_fp16.json")] if out else [])])
    print("== load ==")
    bench_load.main([*(["--json", j("load.json")] if out else [])])
    print("== training ==")
    bench_train.main([*(["--json", j("train.json")] if out else [])])


if __name__ == "__main__":
    main()
