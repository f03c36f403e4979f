"""``python -m morphable info``: print the model summary and how long the load took."""
from __future__ import annotations

import argparse
import sys

from .ict import REGIONS, ModelLoadError, timed_load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m morphable", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    info = sub.add_parser("info", help="load the ICT model and print its summary")
    info.add_argument("--model-dir", help="ICT-FaceKit folder or archive (default: env FACEFIT_ICT_DIR, cache, download)")
    info.add_argument("--region", default="face", choices=sorted(REGIONS))
    info.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    args = ap.parse_args(argv)
    try:
        model, seconds = timed_load(args.model_dir, region=args.region, download=not args.no_download)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = model.summary()
    print(f"source:           {s['source']}")
    print(f"units:            {s['units']}")
    print(f"region:           {args.region} ({', '.join(s['regions'])})")
    print(f"vertices:         {s['vertices']}")
    print(f"triangles:        {s['triangles']}")
    print(f"uv coordinates:   {s['uv_coordinates']}")
    print(f"identity modes:   {s['identity_modes']}")
    print(f"expression modes: {s['expression_modes']}")
    print("landmark sets:    " + ", ".join(f"{k} ({v})" for k, v in s["landmark_sets"].items()))
    print("vertex sets:      " + ", ".join(f"{k} ({v})" for k, v in s["vertex_sets"].items()))
    print(f"albedo model:     {'yes' if s['albedo'] else 'no'}")
    print(f"load time:        {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
