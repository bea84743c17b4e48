"""Fill timing on a synthetic scan (issue 21 item 4): the old methods and the exemplar fill, optionally with
other exemplar settings (e.g. the previous default ``{"thin": 2.0}``) in the same sitting, one thread.
The scan is bench_fill.synthetic_scan (real pictures tiled, losses from bench_fill.loss_mask, ~4.7 %).

    nice -n 10 python bench/bench_fill_time.py 25 '[{}, {"thin": 2.0}]' harmonic,telea,ns

Prints seconds and seconds per MP per method (and the exemplar's dE00 to the undamaged scan).
"""
import sys, json, time, numpy as np
sys.path[:0] = [str(__import__('pathlib').Path(__file__).resolve().parents[1]), str(__import__('pathlib').Path(__file__).resolve().parent)]
import bench_fill as BF
import restoration.exemplar as EX
from dataclasses import replace
import cv2, torch
cv2.setNumThreads(1); torch.set_num_threads(1)
mp = float(sys.argv[1]); variants = json.loads(sys.argv[2]); methods = sys.argv[3].split(',') if len(sys.argv) > 3 else []
img, mask, clean = BF.synthetic_scan(mp)
print('mp', img.shape[0]*img.shape[1]/1e6, 'mask', mask.mean().round(4), flush=True)
for m in methods:
    t = time.perf_counter(); BF.run_fill(m, img, mask); s = time.perf_counter() - t
    print(m, round(s, 1), 's', round(s / mp, 3), 's/MP', flush=True)
for v in variants:
    EX.exemplar_fill.__defaults__ = (replace(EX.ExemplarConfig(), **v), None)
    t = time.perf_counter(); f = BF.run_fill('exemplar', img, mask); s = time.perf_counter() - t
    print('exemplar', v, round(s, 1), 's', round(s / mp, 3), 's/MP', 'dE', round(BF.de00_in(f, clean, mask), 3), flush=True)
