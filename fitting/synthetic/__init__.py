"""Synthetic faces with known truth (shape, pose, light, albedo, detail): the benches' and tests' ground truth.

    python -m fitting.synthetic --n 5 --seed 0 --out synth --detail
"""
