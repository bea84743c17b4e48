"""``python -m tinywan sample --prompt "red square moving right" --out DIR``: sample the trained
tiny Wan, write a PNG strip per prompt and print the colour shares as JSON."""
import argparse
import json
import pathlib

import torch


def main(argv=None):
    from . import data, render, vae
    from .sample import sample
    from .weights import load_trained

    ap = argparse.ArgumentParser(prog="python -m tinywan")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("sample", help="sample the trained tiny Wan")
    sp.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    sp.add_argument("--negative", default="", help="CFG negative prompt (default: empty)")
    sp.add_argument("--steps", type=int, default=20)
    sp.add_argument("--cfg", type=float, default=5.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--weights", default=None, help="safetensors (default: the shipped weights)")
    sp.add_argument("--out", default="tinywan_out", help="output folder for PNG strips")
    a = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_trained(a.weights)
    out = pathlib.Path(a.out)
    report = []
    for i, p in enumerate(a.prompt):
        z = sample(model, data.encode_prompt(p), data.encode_prompt(a.negative), steps=a.steps, cfg=a.cfg,
                   seed=a.seed)
        path = render.save_latent_strips(z, out / f"{i:02d}_{p.replace(' ', '_') or 'empty'}.png")
        shares = data.colour_shares(vae.to_unit(vae.decode(z))[0])
        report.append({"prompt": p, "png": str(path), "colour_shares": {k: round(v, 3) for k, v in shares.items()}})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
